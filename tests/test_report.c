/* The report of qat compare: results.json, per-layer CSV files, report.html.
 * report.c (and cli.c, for the JSON writer and error messages) is compiled
 * into this test, so its static helpers can be tested too. The HTML and the
 * JSON are checked by tests/check_report.py (python3 standard library). */
#include "../tools/cli.c"
#include "../tools/report.c"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"

/* ---- fixtures ---- */

static const char *const specs3[] = {"w8a8", "w4a8", "w4a4"};
static const char *const calibs[] = {"minmax", "percentile", "kl", "mse"};
static const char *const units[] = {"input", "conv1", "conv2", "fc1", "fc2", "fc3"};
/* fake-quant accuracies per (spec, calibrator) */
static const double ptq_test[3][4] = {{0.9038, 0.9036, 0.9031, 0.9037}, {0.8871, 0.8912, 0.8935, 0.8927},
                                      {0.7815, 0.8342, 0.8410, 0.8391}};
static const double ptq_val[3][4] = {{0.9071, 0.9066, 0.9060, 0.9068}, {0.8890, 0.8931, 0.8957, 0.8944},
                                     {0.7850, 0.8360, 0.8399, 0.8412}};
static const int chosen3[3] = {0, 2, 3};
static const double qat_test[3] = {0.9045, 0.9012, 0.8876};

static void copy(char *dst, size_t n, const char *src)
{
    size_t len = strlen(src);
    if (len >= n) len = n - 1; /* truncate, as snprintf would */
    memcpy(dst, src, len);
    dst[len] = '\0';
}

static void set_layers(cmp_run *u, int wbits, int calib)
{
    u->n_layers = 6;
    for (int l = 0; l < 6; l++) {
        cmp_layer *L = &u->layers[l];
        copy(L->name, sizeof L->name, units[l]);
        L->sqnr_db = 6.0 * wbits - 3.5 * l + 1.25 * calib;
        L->cosine = 1.0 - 0.0001 * (l + 1) * (9 - wbits);
        L->mse = 0.0005 * (l + 1) * (9 - wbits);
    }
    if (wbits == 8 && calib == 0) { /* exactly representable values for the CSV check */
        u->layers[0].sqnr_db = INFINITY;
        u->layers[0].cosine = 1;
        u->layers[0].mse = 0;
        u->layers[1].sqnr_db = 40.25;
        u->layers[1].cosine = 0.5;
        u->layers[1].mse = 0.125;
    }
}

/* Three specs, four PTQ calibrators and QAT each, a mixed-precision run,
 * float and QAT histories, sensitivity and overrides. */
static void fixture_full(compare_results *r)
{
    memset(r, 0, sizeof *r);
    copy(r->model, sizeof r->model, "lenet5");
    copy(r->from, sizeof r->from, "runs/lenet5-float.h5");
    copy(r->out_dir, sizeof r->out_dir, "runs/compare");
    r->threads = 2;
    r->test_images = 10000;
    r->val_images = 5000;
    r->calib_images = 1024;
    r->qat_epochs = 4;
    r->float_val_accuracy = 0.9062;
    r->float_test_accuracy = 0.9041;
    r->float_bytes = 4 * 61706;
    r->n_float_epochs = 10;
    for (int e = 0; e < 10; e++) {
        cmp_epoch *h = &r->float_history[e];
        h->epoch = e + 1;
        h->train_loss = 0.25 + 0.4 / (e + 1);
        h->train_accuracy = 0.93 - 0.12 / (e + 1);
        h->val_accuracy = 0.9062 - 0.1 / ((e + 1) * (e + 1));
        h->test_accuracy = 0.9041 - 0.1 / ((e + 1) * (e + 1));
    }
    r->n_specs = 3;
    for (int s = 0; s < 3; s++) copy(r->specs[s], sizeof r->specs[s], specs3[s]);
    const int wbits[3] = {8, 4, 4};
    const long bytes[3] = {62350, 31497, 31497};
    for (int s = 0; s < 3; s++) {
        for (int c = 0; c < 5; c++) {
            cmp_run *u = &r->runs[r->n_runs++];
            int qat = c == 4;
            copy(u->spec, sizeof u->spec, specs3[s]);
            copy(u->method, sizeof u->method, qat ? "qat" : "ptq");
            copy(u->calib, sizeof u->calib, qat ? "lsq" : calibs[c]);
            u->test_accuracy = qat ? qat_test[s] : ptq_test[s][c];
            u->val_accuracy = qat ? qat_test[s] + 0.0021 : ptq_val[s][c];
            u->chosen = !qat && chosen3[s] == c;
            char tag[64];
            snprintf(tag, sizeof tag, "%s-%s-%s", specs3[s], qat ? "qat" : "ptq", qat ? "lsq" : calibs[c]);
            /* w8a8: all exported; w4a8: the chosen PTQ run and QAT; w4a4: none */
            u->exported = s == 0 || (s == 1 && (qat || u->chosen));
            u->model_bytes = bytes[s];
            if (u->exported) {
                u->int8_test_accuracy = u->test_accuracy + (c == 1 ? 0.0001 : 0);
                u->int8_images_per_s = 48213.7 - 1000 * s - 10 * c;
                u->top1_agreement = 0.9998 - 0.0001 * c;
                u->logit_agreement = 0.99871;
                u->max_logit_diff_steps = 1;
                u->file_bytes = bytes[s] + 5321;
                snprintf(u->int8_file, sizeof u->int8_file, "runs/compare/%s.qat8", tag);
            }
            u->seconds = qat ? 61.25 + 3 * s : 2.5 + 0.25 * c;
            snprintf(u->file, sizeof u->file, "runs/compare/%s.h5", tag);
            set_layers(u, wbits[s], c);
            if (qat) {
                u->n_epochs = 4;
                for (int e = 0; e < 4; e++) {
                    cmp_epoch *h = &u->history[e];
                    h->epoch = e + 1;
                    h->train_loss = 0.33 - 0.02 * e + 0.04 * s;
                    h->train_accuracy = 0.90 + 0.004 * e - 0.02 * s;
                    h->val_accuracy = qat_test[s] + 0.0021 - 0.003 * (3 - e);
                    h->test_accuracy = qat_test[s] - 0.003 * (3 - e);
                }
            }
        }
    }
    /* the mixed-precision PTQ run from --budget */
    cmp_run *m = &r->runs[r->n_runs++];
    copy(m->spec, sizeof m->spec, "mixed");
    copy(m->method, sizeof m->method, "ptq");
    copy(m->calib, sizeof m->calib, "mse");
    m->test_accuracy = 0.8967;
    m->val_accuracy = 0.8990;
    m->exported = 1;
    m->int8_test_accuracy = 0.8966;
    m->int8_images_per_s = 45002.4;
    m->top1_agreement = 0.9999;
    m->logit_agreement = 0.99902;
    m->max_logit_diff_steps = 1;
    m->model_bytes = 38900;
    m->file_bytes = 44221;
    m->seconds = 3.75;
    copy(m->file, sizeof m->file, "runs/compare/mixed-ptq-mse.h5");
    copy(m->int8_file, sizeof m->int8_file, "runs/compare/mixed-ptq-mse.qat8");
    set_layers(m, 6, 3);

    copy(r->sens_spec, sizeof r->sens_spec, "w4a4");
    const char *su[6] = {"conv1", "input", "fc3", "conv2", "fc1", "fc2"};
    const double drop[6] = {0.0412, 0.0198, 0.0105, 0.0061, 0.0023, -0.0004};
    const long wp[6] = {150, 0, 840, 2400, 48000, 10080};
    r->n_sens = 6;
    for (int i = 0; i < 6; i++) {
        copy(r->sens[i].unit, sizeof r->sens[i].unit, su[i]);
        r->sens[i].drop = drop[i];
        r->sens[i].val_accuracy = r->float_val_accuracy - drop[i];
        r->sens[i].sqnr_db = i == 5 ? INFINITY : 12.5 + 3 * i;
        r->sens[i].weight_params = wp[i];
    }
    r->budget_bytes = 40000;
    copy(r->overrides_file, sizeof r->overrides_file, "runs/compare/overrides.txt");
    r->n_overrides = 2;
    copy(r->overrides[0], sizeof r->overrides[0], "conv1=w8a8");
    copy(r->overrides[1], sizeof r->overrides[1], "input=w8a8");
    r->seconds = 312.5;
}

/* One spec, nothing exported, QAT without epochs, no float history, no
 * sensitivity, infinite and NaN SQNR, strings that need escaping, and a
 * repeated run. */
static void fixture_edge(compare_results *r)
{
    memset(r, 0, sizeof *r);
    copy(r->model, sizeof r->model, "<b>\"x\" & 'y'\xff</b>");
    copy(r->from, sizeof r->from, "dir with space/a\\b\"c.h5");
    r->threads = 1;
    r->test_images = 500;
    r->calib_images = 64;
    r->float_val_accuracy = NAN; /* no validation split */
    r->float_test_accuracy = 0.875;
    r->float_bytes = 1000;
    r->n_specs = 1;
    copy(r->specs[0], sizeof r->specs[0], "w8a8");
    const char *cal[3] = {"minmax", "kl", "lsq"};
    for (int c = 0; c < 3; c++) {
        cmp_run *u = &r->runs[r->n_runs++];
        copy(u->spec, sizeof u->spec, "w8a8");
        copy(u->method, sizeof u->method, c == 2 ? "qat" : "ptq");
        copy(u->calib, sizeof u->calib, cal[c]);
        u->test_accuracy = 0.875 - 0.0025 * c;
        u->val_accuracy = NAN;
        u->chosen = c == 1;
        u->model_bytes = 250;
        u->seconds = 0.5;
        u->n_layers = 2;
        copy(u->layers[0].name, sizeof u->layers[0].name, "a,b\"c");
        copy(u->layers[1].name, sizeof u->layers[1].name, "<fc>");
        for (int l = 0; l < 2; l++) {
            u->layers[l].sqnr_db = c == 0 ? INFINITY : (l == 1 && c == 1 ? NAN : 30.0 + l);
            u->layers[l].cosine = 1;
            u->layers[l].mse = 0;
        }
    }
    r->runs[r->n_runs] = r->runs[0]; /* a repeated run: told apart by its index */
    r->runs[r->n_runs].test_accuracy = 0.8;
    r->n_runs++;
    r->seconds = 1.5;
}

/* ---- helpers ---- */

static const char *python(void)
{
    return access("/usr/bin/python3", X_OK) == 0 ? "/usr/bin/python3" : "python3";
}

/* Runs check_report.py on dir; its exit status. */
static int check_report(const char *dir)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "'%s' '%s/../check_report.py' '%s'", python(), tu_data_dir(), dir);
    fflush(stdout);
    int st = system(cmd);
    return st == -1 ? -1 : WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

/* Runs a python snippet with argv[1] = path; its exit status. */
static int py(const char *code, const char *path)
{
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "'%s' -c '%s' '%s'", python(), code, path);
    fflush(stdout);
    int st = system(cmd);
    return st == -1 ? -1 : WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    size_t got = fread(s, 1, (size_t)n, f);
    s[got] = 0;
    fclose(f);
    return s;
}

static int exists(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0;
}

static const char *in_dir(const char *dir, const char *name)
{
    static char buf[4096];
    snprintf(buf, sizeof buf, "%s/%s", dir, name);
    return buf;
}

static int count(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle)) n++;
    return n;
}

/* ---- tests ---- */

START_TEST(test_full_report)
{
    compare_results *r = malloc(sizeof *r);
    fixture_full(r);
    char dir[1024];
    copy(dir, sizeof dir, tu_tmp_path("full/nested"));
    ck_assert_int_eq(report_write(dir, r), 0);

    /* every file */
    ck_assert(exists(in_dir(dir, "results.json")));
    ck_assert(exists(in_dir(dir, "report.html")));
    ck_assert(exists(in_dir(dir, "sensitivity.csv")));
    for (int s = 0; s < 3; s++)
        for (int c = 0; c < 4; c++) {
            char name[128];
            snprintf(name, sizeof name, "layers-%s-ptq-%s.csv", specs3[s], calibs[c]);
            ck_assert_msg(exists(in_dir(dir, name)), "%s missing", name);
            snprintf(name, sizeof name, "layers-%s-qat-lsq.csv", specs3[s]);
            ck_assert_msg(exists(in_dir(dir, name)), "%s missing", name);
        }
    ck_assert(exists(in_dir(dir, "layers-mixed-ptq-mse.csv")));

    /* a per-layer CSV, exactly */
    char *csv = slurp(in_dir(dir, "layers-w8a8-ptq-minmax.csv"));
    ck_assert_ptr_nonnull(csv);
    ck_assert(!strncmp(csv, "name,cosine,sqnr_db,mse\ninput,1,inf,0\nconv1,0.5,40.25,0.125\nconv2,", 65));
    ck_assert_int_eq(count(csv, "\n"), 7);
    free(csv);
    char *sens = slurp(in_dir(dir, "sensitivity.csv"));
    ck_assert_ptr_nonnull(sens);
    ck_assert(!strncmp(sens, "rank,unit,val_accuracy,accuracy_drop,sqnr_db,weight_params\n1,conv1,", 67));
    ck_assert_ptr_nonnull(strstr(sens, "\n2,input,0.8864,0.0198,15.5,0\n"));
    ck_assert_ptr_nonnull(strstr(sens, "\n6,fc2,0.9066,-0.0004,inf,10080\n"));
    free(sens);

    /* JSON: parses, and holds what the fixture put in, with null for inf and
     * for the int8 fields of runs that were not exported */
    const char *json_path = in_dir(dir, "results.json");
    char jp[4096];
    copy(jp, sizeof jp, json_path);
    ck_assert_int_eq(py("import json,sys\n"
                        "d=json.load(open(sys.argv[1]))\n"
                        "r=d[\"runs\"]\n"
                        "assert d[\"model\"]==\"lenet5\" and d[\"float_bytes\"]==246824 and d[\"threads\"]==2\n"
                        "assert d[\"specs\"]==[\"w8a8\",\"w4a8\",\"w4a4\"] and len(r)==16\n"
                        "assert r[0][\"layers\"][0]==dict(name=\"input\",cosine=1,sqnr_db=None,mse=0)\n"
                        "assert r[0][\"layers\"][1][\"sqnr_db\"]==40.25 and r[0][\"exported\"] is True\n"
                        "assert r[0][\"chosen\"] is True and r[1][\"chosen\"] is False\n"
                        "assert r[0][\"test_accuracy\"]==0.9038 and r[0][\"int8_images_per_s\"]==48213.7\n"
                        "assert abs(r[0][\"test_accuracy_drop\"]-0.0003)<1e-12\n"
                        "assert abs(r[0][\"compression_vs_float\"]-246824/62350)<1e-9\n"
                        "w=r[10]\n"
                        "assert w[\"spec\"]==\"w4a4\" and w[\"exported\"] is False and w[\"int8_test_accuracy\"] is None\n"
                        "assert w[\"file_bytes\"] is None and w[\"int8_file\"] is None and w[\"model_bytes\"]==31497\n"
                        "assert len(r[4][\"history\"])==4 and r[4][\"history\"][3][\"epoch\"]==4 and r[0][\"history\"]==[]\n"
                        "assert len(d[\"float_history\"])==10\n"
                        "s=d[\"sensitivity\"]\n"
                        "assert d[\"sensitivity_spec\"]==\"w4a4\" and len(s)==6 and s[0][\"unit\"]==\"conv1\"\n"
                        "assert s[0][\"accuracy_drop\"]==0.0412 and s[5][\"sqnr_db\"] is None and s[1][\"rank\"]==2\n"
                        "assert d[\"budget_bytes\"]==40000 and d[\"overrides\"]==[\"conv1=w8a8\",\"input=w8a8\"]\n"
                        "assert d[\"overrides_file\"]==\"runs/compare/overrides.txt\" and d[\"seconds\"]==312.5\n",
                        jp),
                     0);

    /* HTML: balanced, SVG well-formed, offline, every table number = JSON */
    ck_assert_int_eq(check_report(dir), 0);
    char *html = slurp(in_dir(dir, "report.html"));
    ck_assert_ptr_nonnull(html);
    /* one SQNR chart per spec (and mixed), accuracy chart, 2 training panels, sensitivity */
    ck_assert_int_eq(count(html, "<svg "), 4 + 1 + 2 + 1);
    ck_assert_ptr_nonnull(strstr(html, "<td data-key=\"test_accuracy\">90.38%</td>"));
    ck_assert_ptr_nonnull(strstr(html, "<td data-key=\"float_bytes\">246,824</td>"));
    ck_assert_ptr_nonnull(strstr(html, "<td data-key=\"int8_images_per_s\">48,214</td>"));
    ck_assert_ptr_nonnull(strstr(html, "<td data-key=\"model_bytes\">\xE2\x89\x88" "31,497</td>"));
    ck_assert_ptr_nonnull(strstr(html, "<td data-key=\"compression_vs_float\">3.96\xC3\x97</td>"));
    ck_assert_ptr_nonnull(strstr(html, "<td data-key=\"test_accuracy_drop\">0.03</td>"));
    ck_assert_int_eq(count(html, "class=\"star\" title"), 3); /* one chosen calibrator per spec */
    ck_assert_ptr_nonnull(strstr(html, "runs/compare/overrides.txt"));
    ck_assert_ptr_nonnull(strstr(html, "<li>conv1=w8a8</li>"));
    ck_assert_ptr_nonnull(strstr(html, "How to read this"));
    ck_assert_ptr_null(strstr(html, "nan<"));
    ck_assert_ptr_null(strstr(html, "nan%"));
    ck_assert_ptr_null(strstr(html, "inf<"));
    ck_assert_ptr_null(strstr(html, "inf%"));
    free(html);
    free(r);
}
END_TEST

START_TEST(test_edge_cases)
{
    compare_results *r = malloc(sizeof *r);
    fixture_edge(r);
    char dir[1024];
    copy(dir, sizeof dir, tu_tmp_path("edge"));
    ck_assert_int_eq(report_write(dir, r), 0);
    ck_assert(!exists(in_dir(dir, "sensitivity.csv")));
    ck_assert_int_eq(check_report(dir), 0);

    char jp[4096];
    copy(jp, sizeof jp, in_dir(dir, "results.json"));
    ck_assert_int_eq(py("import json,sys\n"
                        "d=json.load(open(sys.argv[1], encoding=\"utf-8\"))\n"
                        "assert d[\"model\"]==\"<b>\\\"x\\\" & \\x27y\\x27\\ufffd</b>\", d[\"model\"]\n"
                        "assert d[\"from\"]==\"dir with space/a\\\\b\\\"c.h5\"\n"
                        "assert d[\"float_val_accuracy\"] is None and d[\"float_history\"]==[]\n"
                        "assert d[\"sensitivity\"]==[] and d[\"sensitivity_spec\"] is None\n"
                        "assert d[\"overrides\"]==[] and d[\"budget_bytes\"] is None and d[\"overrides_file\"] is None\n"
                        "assert all(x[\"int8_test_accuracy\"] is None and x[\"history\"]==[] for x in d[\"runs\"])\n"
                        "assert d[\"runs\"][1][\"layers\"][1][\"sqnr_db\"] is None\n",
                        jp),
                     0);

    char *csv = slurp(in_dir(dir, "layers-w8a8-ptq-minmax.csv"));
    ck_assert_ptr_nonnull(csv);
    ck_assert_str_eq(csv, "name,cosine,sqnr_db,mse\n\"a,b\"\"c\",1,inf,0\n<fc>,1,inf,0\n");
    free(csv);
    csv = slurp(in_dir(dir, "layers-w8a8-ptq-kl.csv"));
    ck_assert_str_eq(csv, "name,cosine,sqnr_db,mse\n\"a,b\"\"c\",1,30,0\n<fc>,1,nan,0\n");
    free(csv);

    char *html = slurp(in_dir(dir, "report.html"));
    ck_assert_ptr_nonnull(html);
    ck_assert_ptr_nonnull(strstr(html, "No training history"));
    ck_assert_int_eq(count(html, "<td class=\"na l\">-</td>"), 2 * 4); /* no checkpoint, no int8 file */
    ck_assert_ptr_nonnull(strstr(html, ">PTQ minmax #3</text>"));
    ck_assert(exists(in_dir(dir, "layers-w8a8-ptq-minmax-3.csv")));
    ck_assert_ptr_null(strstr(html, "id=\"sensitivity\""));
    ck_assert_ptr_null(strstr(html, "id=\"mixed\""));
    ck_assert_ptr_nonnull(strstr(html, "&lt;b&gt;&quot;x&quot; &amp; &#39;y&#39;\xEF\xBF\xBD&lt;/b&gt;"));
    ck_assert_ptr_null(strstr(html, "<b>\"x\""));
    ck_assert_ptr_nonnull(strstr(html, "<td class=\"na\" data-key=\"int8_test_accuracy\">-</td>"));
    ck_assert_ptr_nonnull(strstr(html, "<td class=\"na\" data-key=\"val_accuracy\">-</td>"));
    ck_assert_int_eq(count(html, "<svg "), 2); /* accuracy + one SQNR chart */
    ck_assert_ptr_nonnull(strstr(html, "\xE2\x88\x9E</text>"));   /* inf SQNR bars marked */
    free(html);

    /* no runs at all: still a valid report */
    memset(r, 0, sizeof *r);
    copy(dir, sizeof dir, tu_tmp_path("empty"));
    ck_assert_int_eq(report_write(dir, r), 0);
    ck_assert_int_eq(check_report(dir), 0);
    free(r);
}
END_TEST

/* The checker must catch a number that differs from the JSON and a broken
 * tag, or the checks above prove nothing. */
START_TEST(test_checker_fails)
{
    compare_results *r = malloc(sizeof *r);
    fixture_full(r);
    char dir[1024];
    copy(dir, sizeof dir, tu_tmp_path("tamper"));
    ck_assert_int_eq(report_write(dir, r), 0);
    ck_assert_int_eq(check_report(dir), 0);

    char path[2048];
    copy(path, sizeof path, in_dir(dir, "results.json"));
    char *json = slurp(path);
    char *p = strstr(json, "\"test_accuracy\":0.9038");
    ck_assert_ptr_nonnull(p);
    p[strlen("\"test_accuracy\":0.90")] = '4'; /* 0.9048: shown 90.38% */
    ck_assert_int_eq(tu_write_file(path, json, strlen(json)), 0);
    ck_assert_int_eq(check_report(dir), 1);
    p[strlen("\"test_accuracy\":0.90")] = '3';
    ck_assert_int_eq(tu_write_file(path, json, strlen(json)), 0);
    ck_assert_int_eq(check_report(dir), 0);
    free(json);

    copy(path, sizeof path, in_dir(dir, "report.html"));
    char *html = slurp(path);
    char *e = strstr(html, "</text>");
    ck_assert_ptr_nonnull(e);
    memcpy(e, "</span>", 7); /* <text> closed by </span> */
    ck_assert_int_eq(tu_write_file(path, html, strlen(html)), 0);
    ck_assert_int_eq(check_report(dir), 1);
    free(html);
    free(r);
}
END_TEST

START_TEST(test_write_error)
{
    compare_results *r = calloc(1, sizeof *r);
    char file[1024], dir[1100];
    copy(file, sizeof file, tu_tmp_path("plainfile"));
    ck_assert_int_eq(tu_write_file(file, "x", 1), 0);
    snprintf(dir, sizeof dir, "%s/sub", file);
    ck_assert_int_eq(report_write(dir, r), 1);
    ck_assert_int_eq(report_write(file, r), 1);
    free(r);
}
END_TEST

START_TEST(test_helpers)
{
    char b[64];
    ck_assert_str_eq(thousands(b, sizeof b, 0), "0");
    ck_assert_str_eq(thousands(b, sizeof b, 999), "999");
    ck_assert_str_eq(thousands(b, sizeof b, 1000), "1,000");
    ck_assert_str_eq(thousands(b, sizeof b, 246824), "246,824");
    ck_assert_str_eq(thousands(b, sizeof b, 1234567), "1,234,567");
    ck_assert_str_eq(thousands(b, sizeof b, -1234), "-1,234");

    /* valid UTF-8 kept, invalid bytes replaced, the field's length respected */
    const char in[] = "a\xC3\xA9\xE2\x88\x9E\xF0\x9F\x98\x80" "b\xff\xC3" "c\xED\xA0\x80";
    ck_assert_str_eq(utf8_clean(b, sizeof b, in, sizeof in),
                     "a\xC3\xA9\xE2\x88\x9E\xF0\x9F\x98\x80" "b\xEF\xBF\xBD\xEF\xBF\xBD" "c\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
    const char unterminated[4] = {'w', '8', 'a', '8'};
    ck_assert_str_eq(utf8_clean(b, sizeof b, unterminated, 4), "w8a8");

    char n[32];
    safe_name(n, sizeof n, "w4/a8 x", 8);
    ck_assert_str_eq(n, "w4_a8_x");

    /* round axis ticks */
    frame p = {0};
    nice_axis(&p, 80.3, 91.2, 7);
    ck_assert_double_eq(p.ylo, 80);
    ck_assert_double_eq(p.yhi, 92);
    ck_assert_double_eq(p.ystep, 2);
    nice_axis(&p, 0.21, 0.62, 6);
    ck_assert_double_eq_tol(p.ylo, 0.2, 1e-12);
    ck_assert_double_eq_tol(p.yhi, 0.7, 1e-12);
    ck_assert_double_eq_tol(p.ystep, 0.1, 1e-12);
    ck_assert_int_eq(step_decimals(0.1), 1);
    ck_assert_int_eq(step_decimals(2), 0);
    ck_assert_int_eq(step_decimals(0.05), 2);
    nice_axis(&p, 5, 5, 7); /* a single value still gets a range */
    ck_assert(p.ylo < 5 && p.yhi > 5);

    /* duplicate run names get the run index */
    compare_results *r = calloc(1, sizeof *r);
    r->n_runs = 2;
    for (int i = 0; i < 2; i++) {
        copy(r->runs[i].spec, sizeof r->runs[i].spec, "w8a8");
        copy(r->runs[i].method, sizeof r->runs[i].method, "ptq");
        copy(r->runs[i].calib, sizeof r->runs[i].calib, "kl");
    }
    /* QAT with EMA at one spec and LSQ at another is one line, "QAT ema/lsq";
     * two QAT calibs at one spec are two lines */
    compare_results *q = calloc(1, sizeof *q);
    const char *qs[4][3] = {{"w8a8", "ptq", "kl"}, {"w8a8", "qat", "ema"}, {"w4a8", "qat", "lsq"}, {"w4a8", "ptq", "kl"}};
    q->n_runs = 4;
    for (int i = 0; i < 4; i++) {
        copy(q->runs[i].spec, sizeof q->runs[i].spec, qs[i][0]);
        copy(q->runs[i].method, sizeof q->runs[i].method, qs[i][1]);
        copy(q->runs[i].calib, sizeof q->runs[i].calib, qs[i][2]);
    }
    series se[8];
    ck_assert_int_eq(series_list(q, se, 8), 2);
    ck_assert_str_eq(se[0].label, "PTQ kl");
    ck_assert_str_eq(se[1].label, "QAT ema/lsq");
    ck_assert_int_eq(series_of(se, 2, &q->runs[2]), 1);
    ck_assert_int_eq(series_of(se, 2, &q->runs[3]), 0);
    copy(q->runs[2].spec, sizeof q->runs[2].spec, "w8a8");
    ck_assert_int_eq(series_list(q, se, 8), 3);
    ck_assert_str_eq(se[1].label, "QAT ema");
    ck_assert_str_eq(se[2].label, "QAT lsq");
    ck_assert_int_eq(series_of(se, 3, &q->runs[2]), 2);
    free(q);

    char name[256];
    layer_csv_name(name, sizeof name, r, 0);
    ck_assert_str_eq(name, "layers-w8a8-ptq-kl.csv");
    layer_csv_name(name, sizeof name, r, 1);
    ck_assert_str_eq(name, "layers-w8a8-ptq-kl-1.csv");
    free(r);
}
END_TEST

/* Every array full (96 runs, 64 long-named layers each, 32 epochs, 64
 * sensitivity entries and overrides), and counts out of range: the report
 * stays valid, splits the per-layer charts into panels, and is quick. */
START_TEST(test_capacity)
{
    compare_results *r = calloc(1, sizeof *r);
    r->float_test_accuracy = 0.9;
    r->float_val_accuracy = 0.91;
    r->float_bytes = 400000;
    r->val_images = 100;
    r->n_specs = CMP_MAX_SPECS;
    for (int s = 0; s < CMP_MAX_SPECS; s++) snprintf(r->specs[s], sizeof r->specs[s], "w%da8", s + 1);
    r->n_runs = CMP_MAX_RUNS;
    for (int i = 0; i < CMP_MAX_RUNS; i++) {
        cmp_run *u = &r->runs[i];
        int s = i % CMP_MAX_SPECS, c = i / CMP_MAX_SPECS;
        snprintf(u->spec, sizeof u->spec, "w%da8", s + 1);
        snprintf(u->method, sizeof u->method, "%s", c < 10 ? "ptq" : "qat");
        snprintf(u->calib, sizeof u->calib, "calib%d", c);
        u->test_accuracy = 0.1 + 0.1 * s - 0.001 * c;
        u->val_accuracy = u->test_accuracy;
        u->chosen = c == 0;
        u->exported = c % 2;
        u->model_bytes = 1000 * (s + 1);
        u->n_layers = i == 5 ? 1000 : CMP_MAX_LAYERS; /* out of range: clamped */
        for (int l = 0; l < CMP_MAX_LAYERS; l++) {
            snprintf(u->layers[l].name, sizeof u->layers[l].name, "stage%d.block%d.a_rather_long_unit_name_\xC3\xA9", l / 8,
                     l % 8);
            u->layers[l].sqnr_db = 6.0 * (s + 1) - 0.1 * l;
        }
        u->n_epochs = c >= 10 ? CMP_MAX_EPOCHS : -2;
        for (int e = 0; e < CMP_MAX_EPOCHS; e++) {
            u->history[e].epoch = e + 1;
            u->history[e].train_loss = 1.0 / (e + 1);
            u->history[e].val_accuracy = u->test_accuracy;
        }
    }
    copy(r->sens_spec, sizeof r->sens_spec, "w4a8");
    r->n_sens = CMP_MAX_SENS + 5;
    r->n_overrides = CMP_MAX_SENS;
    for (int i = 0; i < CMP_MAX_SENS; i++) {
        snprintf(r->sens[i].unit, sizeof r->sens[i].unit, "unit%d", i);
        r->sens[i].drop = 0.001 * (CMP_MAX_SENS - i);
        snprintf(r->overrides[i], sizeof r->overrides[i], "unit%d=w8a8", i);
    }
    char dir[1024];
    copy(dir, sizeof dir, tu_tmp_path("capacity"));
    ck_assert_int_eq(report_write(dir, r), 0);
    ck_assert_int_eq(check_report(dir), 0);
    char *html = slurp(in_dir(dir, "report.html"));
    ck_assert_ptr_nonnull(html);
    /* 12 runs per spec: bars >= 4 px leave room for 13 units per panel, so
     * 5 panels of 13 (the last 12) per spec; + accuracy, 2 training, sensitivity */
    ck_assert_int_eq(count(html, "units 1 to 13 of 64\""), CMP_MAX_SPECS);
    ck_assert_int_eq(count(html, "units 53 to 64 of 64\""), CMP_MAX_SPECS);
    ck_assert_int_eq(count(html, "<svg "), 5 * CMP_MAX_SPECS + 4);
    ck_assert_int_eq(count(html, "<li>"), CMP_MAX_SENS);
    ck_assert_int_eq(count(html, "<tr data-sens="), CMP_MAX_SENS);
    free(html);
    char *csv = slurp(in_dir(dir, "layers-w6a8-ptq-calib0.csv"));
    ck_assert_ptr_nonnull(csv);
    ck_assert_int_eq(count(csv, "\n"), 1 + CMP_MAX_LAYERS);
    free(csv);
    free(r);
}
END_TEST

#define ADD(s, fn)                      \
    do {                                \
        TCase *tc_ = tcase_create(#fn); \
        tcase_set_timeout(tc_, 60);     \
        tcase_add_test(tc_, fn);        \
        suite_add_tcase(s, tc_);        \
    } while (0)

static Suite *report_suite(void)
{
    Suite *s = suite_create("report");
    ADD(s, test_helpers);
    ADD(s, test_full_report);
    ADD(s, test_edge_cases);
    ADD(s, test_checker_fails);
    ADD(s, test_capacity);
    ADD(s, test_write_error);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(report_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failures = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failures ? 1 : 0;
}
