/* qat compare's report: results.json, per-layer CSV files and a
 * self-contained report.html (inline CSS and SVG, no scripts, no network).
 * The format is described in docs/REPORT.md. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "tools/cli.h"
#include "tools/compare.h"

/* ---- strings ---- */

/* Copies at most n bytes of s (a fixed-size field that may lack its NUL)
 * into out, replacing every byte that does not start a valid UTF-8
 * sequence by U+FFFD, so JSON and HTML stay valid whatever the field holds. */
static const char *utf8_clean(char *out, size_t outsz, const char *s, size_t n)
{
    static const char rep[] = "\xEF\xBF\xBD";
    size_t o = 0, len = s ? strnlen(s, n) : 0;
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < len && o + 4 < outsz;) {
        unsigned c = u[i];
        size_t k = c < 0x80 ? 1 : (c >= 0xC2 && c <= 0xDF) ? 2 : (c >= 0xE0 && c <= 0xEF) ? 3
                                                           : (c >= 0xF0 && c <= 0xF4) ? 4 : 0;
        int ok = k > 0 && i + k <= len;
        for (size_t j = 1; ok && j < k; j++) ok = (u[i + j] & 0xC0) == 0x80;
        /* overlong 3/4-byte forms, surrogates, > U+10FFFF */
        if (ok && k == 3 && c == 0xE0 && u[i + 1] < 0xA0) ok = 0;
        if (ok && k == 3 && c == 0xED && u[i + 1] >= 0xA0) ok = 0;
        if (ok && k == 4 && c == 0xF0 && u[i + 1] < 0x90) ok = 0;
        if (ok && k == 4 && c == 0xF4 && u[i + 1] >= 0x90) ok = 0;
        if (ok) {
            memcpy(out + o, u + i, k);
            o += k;
            i += k;
        } else {
            memcpy(out + o, rep, 3);
            o += 3;
            i++;
        }
    }
    out[o] = 0;
    return out;
}

#define CLEAN(buf, field) utf8_clean(buf, sizeof buf, field, sizeof(field))

/* Text for HTML and SVG (XML): escapes markup, drops control characters
 * XML 1.0 does not allow. */
static void put_text(FILE *f, const char *s, size_t n)
{
    char buf[1024];
    utf8_clean(buf, sizeof buf, s, n);
    for (const unsigned char *p = (const unsigned char *)buf; *p; p++) {
        switch (*p) {
        case '&': fputs("&amp;", f); break;
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '"': fputs("&quot;", f); break;
        case '\'': fputs("&#39;", f); break;
        default:
            if (*p < 0x20 && *p != '\t' && *p != '\n') fputs("\xEF\xBF\xBD", f);
            else fputc(*p, f);
        }
    }
}
#define TEXT(f, field) put_text(f, field, sizeof(field))
#define TEXTZ(f, str) put_text(f, str, strlen(str))

/* Printf into a static-size buffer for labels. */
static const char *fmt(char *buf, size_t n, const char *format, ...) __attribute__((format(printf, 3, 4)));
static const char *fmt(char *buf, size_t n, const char *format, ...)
{
    va_list ap;
    va_start(ap, format);
    vsnprintf(buf, n, format, ap);
    va_end(ap);
    return buf;
}

/* 1234567 -> "1,234,567" */
static const char *thousands(char *buf, size_t n, long long v)
{
    char digits[32];
    snprintf(digits, sizeof digits, "%lld", v < 0 ? -v : v);
    size_t len = strlen(digits), o = 0;
    if (v < 0 && o + 1 < n) buf[o++] = '-';
    for (size_t i = 0; i < len && o + 2 < n; i++) {
        if (i > 0 && (len - i) % 3 == 0) buf[o++] = ',';
        buf[o++] = digits[i];
    }
    buf[o] = 0;
    return buf;
}

/* Cuts a UTF-8 string longer than max bytes to about max - 3, on a
 * character boundary, and appends "...". */
static void shorten(char *s, size_t max)
{
    if (strlen(s) <= max) return;
    size_t cut = max - 3;
    while (cut > 0 && ((unsigned char)s[cut] & 0xC0) == 0x80) cut--;
    memcpy(s + cut, "...", 4);
}

static int acc_ok(double a) { return isfinite(a) && a >= 0; }

static int streq_n(const char *a, const char *b, size_t n) { return strncmp(a, b, n) == 0; }
#define SAME(a, b) streq_n(a, b, sizeof(a))

static int is_ptq(const cmp_run *u) { return SAME(u->method, "ptq"); }

/* ---- derived values (also written to JSON so every shown number is there) ---- */

static double run_drop(const compare_results *r, const cmp_run *u)
{
    if (!acc_ok(r->float_test_accuracy) || !acc_ok(u->test_accuracy)) return NAN;
    return r->float_test_accuracy - u->test_accuracy;
}

static double run_ratio(const compare_results *r, const cmp_run *u)
{
    if (r->float_bytes <= 0 || u->model_bytes <= 0) return NAN;
    return (double)r->float_bytes / (double)u->model_bytes;
}

/* ---- JSON ---- */

static void jstr(json_w *j, const char *key, const char *s, size_t n)
{
    char buf[1024];
    utf8_clean(buf, sizeof buf, s, n);
    json_str(j, key, buf);
}
#define JSTR(j, key, field) jstr(j, key, field, sizeof(field))

/* A string field, null when empty. */
static void jstr_opt(json_w *j, const char *key, const char *s, size_t n)
{
    if (strnlen(s, n) == 0) json_str(j, key, NULL);
    else jstr(j, key, s, n);
}

static void jacc(json_w *j, const char *key, double v)
{
    json_num(j, key, acc_ok(v) ? v : NAN);
}

static void json_history(json_w *j, const char *key, const cmp_epoch *h, int n)
{
    json_arr(j, key);
    for (int e = 0; e < n; e++) {
        json_obj(j, NULL);
        json_int(j, "epoch", h[e].epoch);
        json_num(j, "train_loss", h[e].train_loss);
        jacc(j, "train_accuracy", h[e].train_accuracy);
        jacc(j, "val_accuracy", h[e].val_accuracy);
        jacc(j, "test_accuracy", h[e].test_accuracy);
        json_obj_end(j);
    }
    json_arr_end(j);
}

static int clampn(int n, int max) { return n < 0 ? 0 : n > max ? max : n; }

void report_json(FILE *f, const compare_results *r)
{
    json_w j;
    json_begin(&j, f);
    json_obj(&j, NULL);
    JSTR(&j, "model", r->model);
    JSTR(&j, "from", r->from);
    JSTR(&j, "out_dir", r->out_dir);
    json_int(&j, "threads", r->threads);
    json_int(&j, "test_images", r->test_images);
    json_int(&j, "val_images", r->val_images);
    json_int(&j, "calib_images", r->calib_images);
    json_int(&j, "qat_epochs", r->qat_epochs);
    JSTR(&j, "methods", r->methods);
    json_bool(&j, "per_tensor_weights", r->per_tensor_weights);
    json_int(&j, "adaround_iters", r->adaround_iters);
    json_int(&j, "adaround_images", r->adaround_images);
    json_int(&j, "bc_images", r->bc_images);
    jacc(&j, "float_val_accuracy", r->float_val_accuracy);
    jacc(&j, "float_test_accuracy", r->float_test_accuracy);
    json_int(&j, "float_bytes", r->float_bytes);
    json_history(&j, "float_history", r->float_history, clampn(r->n_float_epochs, CMP_MAX_EPOCHS));
    json_arr(&j, "specs");
    for (int s = 0; s < clampn(r->n_specs, CMP_MAX_SPECS); s++) JSTR(&j, NULL, r->specs[s]);
    json_arr_end(&j);

    json_arr(&j, "runs");
    for (int i = 0; i < clampn(r->n_runs, CMP_MAX_RUNS); i++) {
        const cmp_run *u = &r->runs[i];
        json_obj(&j, NULL);
        JSTR(&j, "spec", u->spec);
        JSTR(&j, "method", u->method);
        JSTR(&j, "calib", u->calib);
        jacc(&j, "val_accuracy", u->val_accuracy);
        jacc(&j, "test_accuracy", u->test_accuracy);
        json_num(&j, "test_accuracy_drop", run_drop(r, u));
        json_bool(&j, "chosen", u->chosen);
        json_bool(&j, "exported", u->exported);
        if (u->exported) {
            jacc(&j, "int8_test_accuracy", u->int8_test_accuracy);
            json_num(&j, "int8_images_per_s", u->int8_images_per_s);
            jacc(&j, "top1_agreement", u->top1_agreement);
            jacc(&j, "logit_agreement", u->logit_agreement);
            json_int(&j, "max_logit_diff_steps", u->max_logit_diff_steps);
            jacc(&j, "float32_graph_top1_agreement", u->f32_top1_agreement);
            jacc(&j, "float32_graph_logit_agreement", u->f32_logit_agreement);
        } else {
            const char *k[] = {"int8_test_accuracy", "int8_images_per_s", "top1_agreement", "logit_agreement",
                               "max_logit_diff_steps", "float32_graph_top1_agreement",
                               "float32_graph_logit_agreement"};
            for (size_t q = 0; q < sizeof k / sizeof *k; q++) json_num(&j, k[q], NAN);
        }
        json_int(&j, "model_bytes", u->model_bytes);
        json_num(&j, "compression_vs_float", run_ratio(r, u));
        if (u->exported) json_int(&j, "file_bytes", u->file_bytes);
        else json_num(&j, "file_bytes", NAN);
        json_num(&j, "seconds", u->seconds);
        jstr_opt(&j, "file", u->file, sizeof u->file);
        jstr_opt(&j, "int8_file", u->int8_file, sizeof u->int8_file);
        json_arr(&j, "layers");
        for (int l = 0; l < clampn(u->n_layers, CMP_MAX_LAYERS); l++) {
            const cmp_layer *L = &u->layers[l];
            json_obj(&j, NULL);
            JSTR(&j, "name", L->name);
            json_num(&j, "cosine", L->cosine);
            json_num(&j, "sqnr_db", L->sqnr_db);
            json_num(&j, "mse", L->mse);
            json_obj_end(&j);
        }
        json_arr_end(&j);
        json_history(&j, "history", u->history, clampn(u->n_epochs, CMP_MAX_EPOCHS));
        json_obj_end(&j);
    }
    json_arr_end(&j);

    jstr_opt(&j, "sensitivity_spec", r->sens_spec, sizeof r->sens_spec);
    json_arr(&j, "sensitivity");
    for (int i = 0; i < clampn(r->n_sens, CMP_MAX_SENS); i++) {
        const cmp_sens *s = &r->sens[i];
        json_obj(&j, NULL);
        json_int(&j, "rank", i + 1);
        JSTR(&j, "unit", s->unit);
        jacc(&j, "val_accuracy", s->val_accuracy);
        json_num(&j, "accuracy_drop", s->drop);
        json_num(&j, "sqnr_db", s->sqnr_db);
        json_int(&j, "weight_params", s->weight_params);
        json_obj_end(&j);
    }
    json_arr_end(&j);
    if (r->budget_bytes > 0) json_int(&j, "budget_bytes", r->budget_bytes);
    else json_num(&j, "budget_bytes", NAN);
    jstr_opt(&j, "overrides_file", r->overrides_file, sizeof r->overrides_file);
    json_arr(&j, "overrides");
    for (int i = 0; i < clampn(r->n_overrides, CMP_MAX_SENS); i++) JSTR(&j, NULL, r->overrides[i]);
    json_arr_end(&j);
    json_num(&j, "seconds", r->seconds);
    json_obj_end(&j);
    json_end(&j);
}

/* ---- CSV ---- */

static void csv_field(FILE *f, const char *s, size_t n)
{
    char buf[1024];
    utf8_clean(buf, sizeof buf, s, n);
    if (!strpbrk(buf, ",\"\r\n")) {
        fputs(buf, f);
        return;
    }
    fputc('"', f);
    for (const char *p = buf; *p; p++) {
        if (*p == '"') fputc('"', f);
        fputc(*p, f);
    }
    fputc('"', f);
}

/* %.9g, with inf/-inf/nan spelled as Python and pandas read them. */
static void csv_num(FILE *f, double v)
{
    if (isnan(v)) fputs("nan", f);
    else if (isinf(v)) fputs(v > 0 ? "inf" : "-inf", f);
    else fprintf(f, "%.9g", v);
}

/* Characters other than [A-Za-z0-9._+=-] become '_'. */
static void safe_name(char *out, size_t n, const char *s, size_t sn)
{
    size_t o = 0;
    for (size_t i = 0; i < sn && s[i] && o + 1 < n; i++) {
        char c = s[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || strchr("._+=-", c);
        out[o++] = ok ? c : '_';
    }
    if (o == 0 && n > 1) out[o++] = '_';
    out[o] = 0;
}

static void layer_csv_base(char *out, size_t n, const cmp_run *u, int suffix)
{
    char a[3][64];
    safe_name(a[0], sizeof a[0], u->spec, sizeof u->spec);
    safe_name(a[1], sizeof a[1], u->method, sizeof u->method);
    safe_name(a[2], sizeof a[2], u->calib, sizeof u->calib);
    if (suffix < 0) snprintf(out, n, "layers-%s-%s-%s.csv", a[0], a[1], a[2]);
    else snprintf(out, n, "layers-%s-%s-%s-%d.csv", a[0], a[1], a[2], suffix);
}

/* "layers-<spec>-<method>-<calib>.csv"; a run whose name an earlier run
 * already has gets "-<run index>" before ".csv". */
static void layer_csv_name(char *out, size_t n, const compare_results *r, int i)
{
    layer_csv_base(out, n, &r->runs[i], -1);
    for (int k = 0; k < i; k++) {
        char other[256];
        layer_csv_base(other, sizeof other, &r->runs[k], -1);
        if (!strcmp(other, out)) {
            layer_csv_base(out, n, &r->runs[i], i);
            return;
        }
    }
}

/* ---- files ---- */

static FILE *open_out(const char *dir, const char *name, char *path, size_t n)
{
    if ((size_t)snprintf(path, n, "%s/%s", dir, name) >= n) {
        cli_fail("report: path too long: %s/%s", dir, name);
        return NULL;
    }
    FILE *f = fopen(path, "w");
    if (!f) cli_fail("report: cannot write %s: %s", path, strerror(errno));
    return f;
}

static int close_out(FILE *f, const char *path)
{
    int bad = ferror(f);
    if (fclose(f) != 0 || bad) return cli_fail("report: error writing %s", path);
    return 0;
}

/* mkdir -p */
static int make_dir(const char *dir)
{
    char p[1024];
    if (snprintf(p, sizeof p, "%s", dir) >= (int)sizeof p) return cli_fail("report: directory name too long: %s", dir);
    for (char *s = p + 1; *s; s++) {
        if (*s != '/') continue;
        *s = 0;
        if (mkdir(p, 0777) != 0 && errno != EEXIST) return cli_fail("report: cannot create %s: %s", p, strerror(errno));
        *s = '/';
    }
    if (mkdir(p, 0777) != 0 && errno != EEXIST) return cli_fail("report: cannot create %s: %s", p, strerror(errno));
    struct stat sb;
    if (stat(p, &sb) != 0 || !S_ISDIR(sb.st_mode)) return cli_fail("report: %s is not a directory", p);
    return 0;
}

/* ---- SVG plotting ---- */

static const char *const palette[] = {"#0072B2", "#E69F00", "#009E73", "#D55E00",
                                      "#CC79A7", "#56B4E9", "#8C564B", "#332288"};
#define N_PALETTE (int)(sizeof palette / sizeof *palette)
#define FLOAT_COLOR "#555555"

static const char *color(int i) { return palette[((i % N_PALETTE) + N_PALETTE) % N_PALETTE]; }

/* Data-to-pixel mapping of one plot area. */
typedef struct frame {
    double x, y, w, h;   /* plot area, px */
    double xlo, xhi;     /* data x range */
    double ylo, yhi, ystep;
} frame;

static double fx(const frame *p, double v) { return p->x + (v - p->xlo) / (p->xhi - p->xlo) * p->w; }
static double fy(const frame *p, double v) { return p->y + p->h - (v - p->ylo) / (p->yhi - p->ylo) * p->h; }

static double nice_num(double x, int round_it)
{
    double e = floor(log10(x)), m = x / pow(10, e), n;
    if (round_it) n = m < 1.5 ? 1 : m < 3 ? 2 : m < 7 ? 5 : 10;
    else n = m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10;
    return n * pow(10, e);
}

/* A y axis covering [lo, hi] with about `ticks` round ticks. */
static void nice_axis(frame *p, double lo, double hi, int ticks)
{
    if (!isfinite(lo) || !isfinite(hi)) lo = 0, hi = 1;
    if (hi - lo < 1e-9 * (fabs(hi) + fabs(lo)) || hi - lo < 1e-12) {
        double d = fabs(hi) > 0 ? fabs(hi) * 0.05 : 1;
        lo -= d, hi += d;
    }
    double step = nice_num((hi - lo) / (ticks - 1), 1);
    p->ylo = floor(lo / step + 1e-9) * step;
    p->yhi = ceil(hi / step - 1e-9) * step;
    if (p->yhi <= p->ylo) p->yhi = p->ylo + step;
    p->ystep = step;
}

static int step_decimals(double step)
{
    int d = (int)ceil(-log10(step) - 1e-9);
    return d < 0 ? 0 : d > 6 ? 6 : d;
}

static void svg_begin(FILE *f, double w, double h, const char *label)
{
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\" "
               "role=\"img\" aria-label=\"", w, h, w, h);
    TEXTZ(f, label);
    fputs("\" font-size=\"12\" fill=\"#1d2330\">\n", f);
}

/* Horizontal grid lines, tick labels, the y axis line and its label. */
static void y_axis(FILE *f, const frame *p, const char *label)
{
    int dec = step_decimals(p->ystep);
    for (int k = 0;; k++) {
        double v = p->ylo + k * p->ystep;
        if (v > p->yhi + p->ystep * 1e-6) break;
        double y = fy(p, v);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e3e6ec\"/>\n", p->x, y, p->x + p->w,
                y);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\" dominant-baseline=\"middle\" fill=\"#5b6475\">%.*f</text>\n",
                p->x - 6, y, dec, fabs(v) < p->ystep * 1e-6 ? 0.0 : v);
    }
    fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#8a93a5\"/>\n", p->x, p->y, p->x,
            p->y + p->h);
    fprintf(f, "<text transform=\"translate(%.1f,%.1f) rotate(-90)\" text-anchor=\"middle\" font-size=\"13\">", p->x - 48,
            p->y + p->h / 2);
    TEXTZ(f, label);
    fputs("</text>\n", f);
}

/* The x axis line at the bottom (or at y = 0 when the range spans 0). */
static void x_axis_line(FILE *f, const frame *p)
{
    double y = (p->ylo < 0 && p->yhi > 0) ? fy(p, 0) : p->y + p->h;
    fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#8a93a5\"/>\n", p->x, y, p->x + p->w, y);
}

static void x_label(FILE *f, const frame *p, double y, const char *label)
{
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"13\">", p->x + p->w / 2, y);
    TEXTZ(f, label);
    fputs("</text>\n", f);
}

enum { MK_CIRCLE, MK_SQUARE, MK_TRIANGLE, MK_DIAMOND, MK_DOWN, MK_COUNT };

/* A marker centred at (x, y); `title` becomes its hover text when not NULL. */
static void marker(FILE *f, int shape, double x, double y, double r, const char *fill, const char *stroke,
                   double sw, const char *title)
{
    shape = ((shape % MK_COUNT) + MK_COUNT) % MK_COUNT;
    switch (shape) {
    case MK_CIRCLE: fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"%.1f\"", x, y, r); break;
    case MK_SQUARE: fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\"", x - r * .85, y - r * .85, r * 1.7, r * 1.7); break;
    case MK_TRIANGLE:
        fprintf(f, "<polygon points=\"%.1f,%.1f %.1f,%.1f %.1f,%.1f\"", x, y - r * 1.15, x - r, y + r * .75, x + r, y + r * .75);
        break;
    case MK_DIAMOND:
        fprintf(f, "<polygon points=\"%.1f,%.1f %.1f,%.1f %.1f,%.1f %.1f,%.1f\"", x, y - r * 1.2, x + r, y, x, y + r * 1.2, x - r, y);
        break;
    default:
        fprintf(f, "<polygon points=\"%.1f,%.1f %.1f,%.1f %.1f,%.1f\"", x, y + r * 1.15, x - r, y - r * .75, x + r, y - r * .75);
        break;
    }
    fprintf(f, " fill=\"%s\" stroke=\"%s\" stroke-width=\"%.1f\"", fill, stroke, sw);
    if (title) {
        fputs("><title>", f);
        TEXTZ(f, title);
        fputs("</title></", f);
        fputs(shape == MK_CIRCLE ? "circle>\n" : shape == MK_SQUARE ? "rect>\n" : "polygon>\n", f);
    } else {
        fputs("/>\n", f);
    }
}

/* Legend entries: kind 0 line+marker, 1 dashed line, 2 bar swatch, 3 ring (chosen). */
typedef struct legend_item {
    char label[160];
    const char *color;
    int kind, shape;
} legend_item;

static double legend_width(const legend_item *it, int n)
{
    size_t m = 0;
    for (int i = 0; i < n; i++) {
        size_t l = strlen(it[i].label);
        m = l > m ? l : m;
    }
    return 44 + 6.6 * (double)m;
}

static void legend(FILE *f, double x, double y, const legend_item *it, int n)
{
    fprintf(f, "<g class=\"legend\">\n");
    for (int i = 0; i < n; i++) {
        double cy = y + 10 + 20 * i;
        switch (it[i].kind) {
        case 0:
            fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"2\"/>\n", x, cy,
                    x + 26, cy, it[i].color);
            marker(f, it[i].shape, x + 13, cy, 4.5, it[i].color, "#fff", 1, NULL);
            break;
        case 1:
            fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"2\" "
                       "stroke-dasharray=\"6 4\"/>\n", x, cy, x + 26, cy, it[i].color);
            break;
        case 2:
            fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"18\" height=\"12\" fill=\"%s\"/>\n", x + 4, cy - 6,
                    it[i].color);
            break;
        default:
            marker(f, MK_CIRCLE, x + 13, cy, 7, "none", "#1d2330", 1.6, NULL);
            break;
        }
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" dominant-baseline=\"middle\">", x + 34, cy);
        TEXTZ(f, it[i].label);
        fputs("</text>\n", f);
    }
    fputs("</g>\n", f);
}

/* ---- grouping ---- */

/* The spec categories: the given specs in order, then any other spec a run
 * uses ("mixed"), in order of appearance. Returns the count; n_given gets
 * how many came from r->specs. */
static int spec_categories(const compare_results *r, char cat[][32], int max, int *n_given)
{
    int n = 0;
    for (int s = 0; s < clampn(r->n_specs, CMP_MAX_SPECS) && n < max; s++) {
        int dup = 0;
        for (int k = 0; k < n; k++) dup |= streq_n(cat[k], r->specs[s], 32);
        if (!dup) memcpy(cat[n++], r->specs[s], 32), cat[n - 1][31] = 0;
    }
    *n_given = n;
    for (int i = 0; i < clampn(r->n_runs, CMP_MAX_RUNS) && n < max; i++) {
        int dup = 0;
        for (int k = 0; k < n; k++) dup |= streq_n(cat[k], r->runs[i].spec, 32);
        if (!dup) memcpy(cat[n++], r->runs[i].spec, 32), cat[n - 1][31] = 0;
    }
    return n;
}

/* The series of the charts: one per PTQ calibrator, in order of
 * appearance, then one per other method (QAT) whatever its calib (QAT may
 * use learnable scales at low bits and EMA at 8 bits: still one line),
 * unless some spec has runs of that method with different calibs, which
 * then get a series each. */
typedef struct series {
    char method[24], calib[16];
    int any_calib;
    char label[96];
} series;

/* Two runs of this method at one spec with different calibs? */
static int method_split(const compare_results *r, const cmp_run *m)
{
    int nr = clampn(r->n_runs, CMP_MAX_RUNS);
    for (int i = 0; i < nr; i++)
        for (int j = i + 1; j < nr; j++) {
            const cmp_run *a = &r->runs[i], *b = &r->runs[j];
            if (SAME(a->method, m->method) && SAME(b->method, m->method) && SAME(a->spec, b->spec) &&
                !SAME(a->calib, b->calib))
                return 1;
        }
    return 0;
}

static void series_new(series *s, const cmp_run *u, int any_calib)
{
    char m[24 * 3 + 1], c[16 * 3 + 1];
    memset(s, 0, sizeof *s);
    memcpy(s->method, u->method, sizeof s->method);
    memcpy(s->calib, u->calib, sizeof s->calib);
    s->method[sizeof s->method - 1] = s->calib[15] = 0;
    s->any_calib = any_calib;
    CLEAN(m, u->method);
    CLEAN(c, u->calib);
    for (char *p = m; *p; p++)
        if (*p >= 'a' && *p <= 'z') *p = (char)(*p - 'a' + 'A');
    snprintf(s->label, sizeof s->label, "%.47s %.47s", m, c);
}

static int series_list(const compare_results *r, series *out, int max)
{
    int n = 0, nr = clampn(r->n_runs, CMP_MAX_RUNS);
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < nr; i++) {
            const cmp_run *u = &r->runs[i];
            if (is_ptq(u) != (pass == 0)) continue;
            int merge = pass == 1 && !method_split(r, u), k = 0;
            while (k < n && !(SAME(out[k].method, u->method) && (merge ? out[k].any_calib : SAME(out[k].calib, u->calib))))
                k++;
            if (k == n) {
                if (n < max) series_new(&out[n++], u, merge);
                continue;
            }
            int seen = 0; /* a merged series names each calib once: "QAT ema/lsq" */
            for (int j = 0; j < i && !seen; j++)
                seen = SAME(r->runs[j].method, u->method) && SAME(r->runs[j].calib, u->calib);
            if (merge && !seen) {
                char c[16 * 3 + 1];
                size_t len = strlen(out[k].label);
                snprintf(out[k].label + len, sizeof out[k].label - len, "/%s", CLEAN(c, u->calib));
            }
        }
    return n;
}

static int series_of(const series *s, int n, const cmp_run *u)
{
    for (int k = 0; k < n; k++)
        if (SAME(s[k].method, u->method) && (s[k].any_calib || SAME(s[k].calib, u->calib))) return k;
    return -1;
}

static const char *series_label(char *buf, size_t n, const series *s)
{
    snprintf(buf, n, "%s", s->label);
    return buf;
}

/* "PTQ kl", "QAT lsq": one run's own method and calib. */
static const char *run_label(char *buf, size_t n, const cmp_run *u)
{
    series t;
    series_new(&t, u, 0);
    return series_label(buf, n, &t);
}

/* Does an earlier run have the same spec, method and calib? */
static int repeated(const compare_results *r, const cmp_run *u)
{
    for (const cmp_run *v = r->runs; v < u; v++)
        if (SAME(v->spec, u->spec) && SAME(v->method, u->method) && SAME(v->calib, u->calib)) return 1;
    return 0;
}

/* Appends " #<run index>" (the suffix of its CSV file) to tell repeats apart. */
static void add_index(char *label, size_t n, const compare_results *r, const cmp_run *u)
{
    size_t len = strlen(label);
    snprintf(label + len, n - len, " #%d", (int)(u - r->runs));
}

/* ---- chart 1: accuracy vs bit width ---- */

/* Horizontal offset of series k of n, so equal values stay visible. */
static double dodge(int k, int n) { return n > 1 ? (k - (n - 1) / 2.0) * fmin(6.0, 30.0 / n) : 0; }

static void chart_accuracy(FILE *f, const compare_results *r)
{
    char cat[CMP_MAX_SPECS + CMP_MAX_RUNS][32];
    int n_given, nc = spec_categories(r, cat, CMP_MAX_SPECS + CMP_MAX_RUNS, &n_given);
    series se[CMP_MAX_RUNS];
    int ns = series_list(r, se, CMP_MAX_RUNS);
    int nr = clampn(r->n_runs, CMP_MAX_RUNS);
    if (nc == 0 || ns == 0) {
        fputs("<p class=\"empty\">No quantized runs.</p>\n", f);
        return;
    }
    double lo = INFINITY, hi = -INFINITY;
    for (int i = 0; i < nr; i++)
        if (acc_ok(r->runs[i].test_accuracy)) {
            lo = fmin(lo, 100 * r->runs[i].test_accuracy);
            hi = fmax(hi, 100 * r->runs[i].test_accuracy);
        }
    int has_float = acc_ok(r->float_test_accuracy);
    if (has_float) lo = fmin(lo, 100 * r->float_test_accuracy), hi = fmax(hi, 100 * r->float_test_accuracy);
    if (!isfinite(lo)) lo = 0, hi = 100;

    legend_item it[CMP_MAX_RUNS + 2];
    int nl = 0, any_chosen = 0;
    for (int k = 0; k < ns && nl < CMP_MAX_RUNS; k++) {
        char b[96];
        it[nl] = (legend_item){.color = color(k), .kind = 0, .shape = k};
        snprintf(it[nl].label, sizeof it[nl].label, "%s", series_label(b, sizeof b, &se[k]));
        nl++;
    }
    for (int i = 0; i < nr; i++) any_chosen |= r->runs[i].chosen && is_ptq(&r->runs[i]);
    if (any_chosen) {
        it[nl] = (legend_item){.color = "#1d2330", .kind = 3};
        snprintf(it[nl].label, sizeof it[nl].label, "chosen PTQ calibrator");
        nl++;
    }
    if (has_float) {
        it[nl] = (legend_item){.color = FLOAT_COLOR, .kind = 1};
        snprintf(it[nl].label, sizeof it[nl].label, "float %.2f%%", 100 * r->float_test_accuracy);
        nl++;
    }
    double lw = legend_width(it, nl);
    double plot_w = fmax(90.0 * nc, 560), W = 70 + plot_w + 24 + lw, H = 380;
    if (W < 1100) plot_w += 1100 - W, W = 1100;
    frame p = {.x = 70, .y = 16, .w = plot_w, .h = H - 16 - 64, .xlo = -0.5, .xhi = nc - 0.5};
    double pad = fmax(0.04 * (hi - lo), 0.05); /* markers stay off the frame */
    nice_axis(&p, lo - pad, fmin(hi + pad, hi > 99.9 ? 100 : 1e9), 7);
    if (p.h < 20 * nl) p.h = 20 * nl, H = p.h + 80;

    svg_begin(f, W, H, "test accuracy versus quantization spec");
    y_axis(f, &p, "test accuracy (%)");
    x_axis_line(f, &p);
    for (int c = 0; c < nc; c++) {
        double x = fx(&p, c);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#8a93a5\"/>\n", x, p.y + p.h, x,
                p.y + p.h + 5);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-weight=\"600\">", x, p.y + p.h + 20);
        TEXT(f, cat[c]);
        fputs("</text>\n", f);
    }
    if (n_given < nc) { /* extra categories (mixed precision) stand apart */
        double x = fx(&p, n_given - 0.5);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#c9ced8\" stroke-dasharray=\"3 3\"/>\n",
                x, p.y, x, p.y + p.h);
    }
    x_label(f, &p, H - 12, "quantization spec (wXaY: X-bit weights, Y-bit activations)");
    if (has_float) {
        double y = fy(&p, 100 * r->float_test_accuracy);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"1.6\" "
                   "stroke-dasharray=\"6 4\"><title>float %.2f%%</title></line>\n",
                p.x, y, p.x + p.w, y, FLOAT_COLOR, 100 * r->float_test_accuracy);
    }
    for (int k = 0; k < ns; k++) {
        /* polyline through consecutive given specs; breaks at gaps and before extras */
        int open = 0;
        fprintf(f, "<path fill=\"none\" stroke=\"%s\" stroke-width=\"%s\" d=\"", color(k),
                SAME(se[k].method, "qat") ? "3" : "2"); /* QAT stands out */
        for (int c = 0; c < nc; c++) {
            const cmp_run *u = NULL;
            for (int i = 0; i < nr && !u; i++)
                if (series_of(se, ns, &r->runs[i]) == k && streq_n(r->runs[i].spec, cat[c], 32) &&
                    acc_ok(r->runs[i].test_accuracy))
                    u = &r->runs[i];
            if (!u || c >= n_given) {
                open = 0;
                continue;
            }
            fprintf(f, "%s%.1f %.1f ", open ? "L" : "M", fx(&p, c) + dodge(k, ns), fy(&p, 100 * u->test_accuracy));
            open = 1;
        }
        fputs("\"/>\n", f);
    }
    /* markers, then rings around the chosen ones so no marker hides a ring */
    for (int pass = 0; pass < 2; pass++)
    for (int i = 0; i < nr; i++) {
        const cmp_run *u = &r->runs[i];
        int k = series_of(se, ns, u), c = 0;
        while (c < nc && !streq_n(u->spec, cat[c], 32)) c++;
        if (k < 0 || c == nc || !acc_ok(u->test_accuracy)) continue;
        double x = fx(&p, c) + dodge(k, ns), y = fy(&p, 100 * u->test_accuracy);
        if (pass == 1) {
            if (u->chosen && is_ptq(u)) marker(f, MK_CIRCLE, x, y, 9, "none", "#1d2330", 1.6, NULL);
            continue;
        }
        char t[256], lab[96], sp[97];
        fmt(t, sizeof t, "%s %s: %.2f%%%s", run_label(lab, sizeof lab, u), CLEAN(sp, u->spec),
            100 * u->test_accuracy, u->chosen && is_ptq(u) ? " (chosen)" : "");
        marker(f, k, x, y, 5, color(k), "#fff", 1, t);
    }
    legend(f, p.x + p.w + 24, p.y, it, nl);
    fputs("</svg>\n", f);
}

/* ---- chart 2: per-layer SQNR, one chart per spec ---- */

/* Returns 1 when some bar is an infinite SQNR (the caption explains it). */
static int chart_sqnr(FILE *f, const compare_results *r, const char *spec)
{
    int nr = clampn(r->n_runs, CMP_MAX_RUNS);
    series se[CMP_MAX_RUNS];
    int ns = series_list(r, se, CMP_MAX_RUNS);
    const cmp_run *run[CMP_MAX_RUNS];
    int n = 0;
    for (int i = 0; i < nr; i++)
        if (streq_n(r->runs[i].spec, spec, 32) && r->runs[i].n_layers > 0) run[n++] = &r->runs[i];
    char sp[97];
    utf8_clean(sp, sizeof sp, spec, 32);
    if (n == 0) {
        fputs("<p class=\"empty\">", f);
        TEXTZ(f, sp);
        fputs(": no per-layer measurements.</p>\n", f);
        return 0;
    }
    /* units: the first run's order, then names only later runs have */
    char names[CMP_MAX_LAYERS * 4][64];
    int nu = 0;
    for (int k = 0; k < n; k++)
        for (int l = 0; l < clampn(run[k]->n_layers, CMP_MAX_LAYERS); l++) {
            int dup = 0;
            for (int q = 0; q < nu && !dup; q++) dup = streq_n(names[q], run[k]->layers[l].name, 64);
            if (!dup && nu < CMP_MAX_LAYERS * 4) memcpy(names[nu++], run[k]->layers[l].name, 64), names[nu - 1][63] = 0;
        }
    double lo = 0, hi = -INFINITY;
    int any_inf = 0;
    size_t maxlen = 0;
    for (int q = 0; q < nu; q++) maxlen = strlen(names[q]) > maxlen ? strlen(names[q]) : maxlen;
    if (maxlen > 28) maxlen = 28;
    for (int k = 0; k < n; k++)
        for (int l = 0; l < clampn(run[k]->n_layers, CMP_MAX_LAYERS); l++) {
            double v = run[k]->layers[l].sqnr_db;
            if (isfinite(v)) lo = fmin(lo, v), hi = fmax(hi, v);
            else if (v > 0) any_inf = 1;
        }
    if (!isfinite(hi)) hi = 10;
    legend_item it[CMP_MAX_RUNS + 1];
    int nl = 0;
    for (int k = 0; k < n; k++) {
        char lab[96];
        int s = series_of(se, ns, run[k]);
        it[nl] = (legend_item){.color = color(s), .kind = 2};
        snprintf(it[nl].label, sizeof it[nl].label, "%s%s", run_label(lab, sizeof lab, run[k]),
                 run[k]->chosen && is_ptq(run[k]) ? " (chosen)" : "");
        if (repeated(r, run[k])) add_index(it[nl].label, sizeof it[nl].label, r, run[k]);
        nl++;
    }
    /* a fixed width so text keeps its size; many units are split over
     * several panels (one SVG each, on a common y axis) so bars stay >= 4 px */
    double lw = legend_width(it, nl), W = 1100, plot_w = W - 70 - 24 - lw;
    double min_gw = fmax(16.0, 4.0 * n / 0.8);
    int per = (int)(plot_w / min_gw), panels;
    if (per < 1) per = 1;
    panels = (nu + per - 1) / per;
    per = (nu + panels - 1) / panels; /* balance the panels */
    double bottom = 16 + 6.6 * (double)maxlen * 0.64 + 34;
    frame p = {.x = 70, .y = any_inf ? 26 : 16, .w = plot_w, .h = 260};
    if (p.h < 20 * nl) p.h = 20 * nl;
    double H = p.y + p.h + bottom;
    nice_axis(&p, lo, hi, 7);
    for (int pan = 0; pan < panels; pan++) {
        int q0 = pan * per, q1 = q0 + per < nu ? q0 + per : nu;
        char title[200];
        if (panels > 1) fmt(title, sizeof title, "SQNR per layer at %s, units %d to %d of %d", sp, q0 + 1, q1, nu);
        else fmt(title, sizeof title, "SQNR per layer at %s", sp);
        svg_begin(f, W, H, title);
        y_axis(f, &p, "SQNR (dB), higher is better");
        double gw = p.w / per, bw = fmin(gw * 0.8 / n, 28), g0 = (gw - bw * n) / 2;
        for (int q = q0; q < q1; q++) {
            double gx = p.x + (q - q0) * gw;
            for (int k = 0; k < n; k++) {
                const cmp_layer *L = NULL;
                for (int l = 0; l < clampn(run[k]->n_layers, CMP_MAX_LAYERS) && !L; l++)
                    if (streq_n(run[k]->layers[l].name, names[q], 64)) L = &run[k]->layers[l];
                if (!L || isnan(L->sqnr_db)) continue;
                double v = L->sqnr_db, x = gx + g0 + k * bw;
                int inf = isinf(v) && v > 0;
                if (isinf(v) && v < 0) v = p.ylo;
                double y0 = fy(&p, fmax(p.ylo, fmin(0, p.yhi))), y1 = inf ? p.y : fy(&p, v);
                double top = fmin(y0, y1), h = fabs(y1 - y0);
                char t[256], lab[96], nm[200];
                int s = series_of(se, ns, run[k]);
                CLEAN(nm, L->name);
                if (inf) fmt(t, sizeof t, "%s, %s: inf dB (identical)", nm, run_label(lab, sizeof lab, run[k]));
                else fmt(t, sizeof t, "%s, %s: %.2f dB", nm, run_label(lab, sizeof lab, run[k]), v);
                fprintf(f, "<rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" fill=\"%s\"%s><title>", x, top,
                        fmax(bw - (bw > 4 ? 1 : 0.5), 0.5), fmax(h, 0.5), color(s), inf ? " fill-opacity=\"0.45\"" : "");
                TEXTZ(f, t);
                fputs("</title></rect>\n", f);
                if (inf)
                    fprintf(f, "<text x=\"%.2f\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"15\" "
                               "font-weight=\"700\">\xE2\x88\x9E</text>\n", x + bw / 2, p.y - 4);
            }
            double cx = gx + gw / 2, by = p.y + p.h;
            char nm[200];
            utf8_clean(nm, sizeof nm, names[q], 64);
            shorten(nm, 28);
            fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#8a93a5\"/>\n", cx, by, cx, by + 4);
            fprintf(f, "<text transform=\"translate(%.1f,%.1f) rotate(-40)\" text-anchor=\"end\" font-size=\"11\">",
                    cx + 3, by + 12);
            TEXTZ(f, nm);
            fputs("</text>\n", f);
        }
        x_axis_line(f, &p);
        x_label(f, &p, H - 10, panels > 1 ? fmt(title, sizeof title, "quantization unit (network order), %d to %d of %d",
                                                q0 + 1, q1, nu)
                                          : "quantization unit (network order)");
        legend(f, p.x + p.w + 24, p.y, it, nl);
        fputs("</svg>\n", f);
    }
    return any_inf;
}

/* ---- chart 3: training curves ---- */

/* One panel: metric 0 = train loss, 1 = accuracy (val or test, %). */
static void chart_history(FILE *f, const compare_results *r, int metric)
{
    int nr = clampn(r->n_runs, CMP_MAX_RUNS), nf = clampn(r->n_float_epochs, CMP_MAX_EPOCHS);
    int use_val = r->val_images > 0;
    double lo = INFINITY, hi = -INFINITY;
    int maxe = 1;
#define VAL(e) (metric == 0 ? (e).train_loss : 100 * (use_val ? (e).val_accuracy : (e).test_accuracy))
#define OK(e) (metric == 0 ? isfinite((e).train_loss) : acc_ok(use_val ? (e).val_accuracy : (e).test_accuracy))
    const cmp_epoch *hist[CMP_MAX_RUNS + 1];
    int hn[CMP_MAX_RUNS + 1], nh = 0;
    legend_item it[CMP_MAX_RUNS + 1];
    for (int i = 0; i < nr; i++) {
        const cmp_run *u = &r->runs[i];
        if (u->n_epochs <= 0) continue;
        char sp[97], ca[49];
        hist[nh] = u->history;
        hn[nh] = clampn(u->n_epochs, CMP_MAX_EPOCHS);
        it[nh] = (legend_item){.color = color(nh), .kind = 0, .shape = nh};
        snprintf(it[nh].label, sizeof it[nh].label, "QAT %s %s", CLEAN(sp, u->spec), CLEAN(ca, u->calib));
        if (repeated(r, u)) add_index(it[nh].label, sizeof it[nh].label, r, u);
        nh++;
    }
    int runs_with_history = nh;
    if (nf > 0) {
        hist[nh] = r->float_history;
        hn[nh] = nf;
        it[nh] = (legend_item){.color = FLOAT_COLOR, .kind = 1};
        snprintf(it[nh].label, sizeof it[nh].label, "float training");
        nh++;
    }
    for (int k = 0; k < nh; k++)
        for (int e = 0; e < hn[k]; e++) {
            if (!OK(hist[k][e])) continue;
            lo = fmin(lo, VAL(hist[k][e]));
            hi = fmax(hi, VAL(hist[k][e]));
            maxe = hist[k][e].epoch > maxe ? hist[k][e].epoch : maxe;
        }
    if (!isfinite(lo)) lo = 0, hi = metric ? 100 : 1;
    if (metric == 0 && lo > 0 && lo < 0.5 * hi) lo = 0;
    double W = 540, plot_w = W - 70 - 16;
    frame p = {.x = 70, .y = 16, .w = plot_w, .h = 240, .xlo = 0.5, .xhi = maxe + 0.5};
    double H = p.y + p.h + 56 + 20.0 * ((nh + 1) / 2) + 8;
    double pad = 0.04 * (hi - lo);
    nice_axis(&p, lo == 0 ? 0 : lo - pad, hi + pad, 6);
    svg_begin(f, W, H, metric ? "accuracy per epoch" : "training loss per epoch");
    y_axis(f, &p, metric ? (use_val ? "validation accuracy (%)" : "test accuracy (%)") : "training loss (cross-entropy)");
    x_axis_line(f, &p);
    int estep = maxe <= 12 ? 1 : (int)nice_num(maxe / 10.0, 1);
    for (int e = 1; e <= maxe; e = e == 1 && estep > 1 ? estep : e + estep) { /* 1, then multiples of estep */
        double x = fx(&p, e);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#8a93a5\"/>\n", x, p.y + p.h, x,
                p.y + p.h + 5);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" fill=\"#5b6475\">%d</text>\n", x, p.y + p.h + 18, e);
    }
    x_label(f, &p, p.y + p.h + 40, "epoch");
    for (int k = nh - 1; k >= 0; k--) { /* float first, underneath */
        int is_float = k >= runs_with_history;
        const char *col = is_float ? FLOAT_COLOR : color(k);
        fprintf(f, "<path fill=\"none\" stroke=\"%s\" stroke-width=\"2\"%s d=\"", col,
                is_float ? " stroke-dasharray=\"6 4\"" : "");
        int open = 0;
        for (int e = 0; e < hn[k]; e++) {
            if (!OK(hist[k][e])) {
                open = 0;
                continue;
            }
            fprintf(f, "%s%.1f %.1f ", open ? "L" : "M", fx(&p, hist[k][e].epoch), fy(&p, VAL(hist[k][e])));
            open = 1;
        }
        fputs("\"/>\n", f);
        int every = hn[k] <= 12 ? 1 : (hn[k] + 9) / 10; /* at most about 10 markers per curve */
        for (int e = 0; e < hn[k] && !is_float; e++) {
            if (!OK(hist[k][e]) || (e % every != 0 && e != hn[k] - 1)) continue;
            char t[160];
            fmt(t, sizeof t, "%s, epoch %d: %.*f%s", it[k].label, hist[k][e].epoch, metric ? 2 : 4, VAL(hist[k][e]),
                metric ? "%" : "");
            marker(f, k, fx(&p, hist[k][e].epoch), fy(&p, VAL(hist[k][e])), 4, col, "#fff", 1, t);
        }
    }
    /* legend below the plot, two columns */
    for (int k = 0; k < nh; k++) legend(f, p.x + (k % 2) * (p.w / 2), p.y + p.h + 50 + 20 * (k / 2), &it[k], 1);
#undef VAL
#undef OK
    fputs("</svg>\n", f);
}

/* ---- chart 4: sensitivity ---- */

static void chart_sensitivity(FILE *f, const compare_results *r)
{
    int n = clampn(r->n_sens, CMP_MAX_SENS);
    double lo = 0, hi = -INFINITY;
    size_t maxlen = 4;
    for (int i = 0; i < n; i++) {
        if (isfinite(r->sens[i].drop)) lo = fmin(lo, 100 * r->sens[i].drop), hi = fmax(hi, 100 * r->sens[i].drop);
        size_t l = strnlen(r->sens[i].unit, 64);
        maxlen = l > maxlen ? l : maxlen;
    }
    if (!isfinite(hi) || hi <= 0) hi = fmax(hi, 0.1);
    if (maxlen > 28) maxlen = 28;
    double left = 16 + 6.6 * (double)maxlen;
    legend_item it[1] = {{.color = "#D55E00", .kind = 2}};
    char sp[97];
    CLEAN(sp, r->sens_spec);
    snprintf(it[0].label, sizeof it[0].label, "drop with only this unit at %s", sp);
    double lw = legend_width(it, 1);
    double W = 1100, pw = W - left - 24 - lw - 20;
    double bh = 20, H = 16 + n * bh + 56;
    /* the frame's y machinery drives the horizontal value axis here */
    frame p = {.x = left, .y = 16, .w = pw, .h = n * bh};
    nice_axis(&p, lo, hi + 0.08 * (hi - lo), 7); /* room for the value labels */
    svg_begin(f, W, H, "accuracy drop per unit");
    double x0 = p.x + (0 - p.ylo) / (p.yhi - p.ylo) * p.w;
    int dec = step_decimals(p.ystep);
    for (int k = 0;; k++) {
        double v = p.ylo + k * p.ystep;
        if (v > p.yhi + p.ystep * 1e-6) break;
        double x = p.x + (v - p.ylo) / (p.yhi - p.ylo) * p.w;
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e3e6ec\"/>\n", x, p.y, x, p.y + p.h);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" fill=\"#5b6475\">%.*f</text>\n", x,
                p.y + p.h + 16, dec, fabs(v) < p.ystep * 1e-6 ? 0.0 : v);
    }
    for (int i = 0; i < n; i++) {
        const cmp_sens *s = &r->sens[i];
        double cy = p.y + (i + 0.5) * bh;
        char nm[200], t[300];
        CLEAN(nm, s->unit);
        fmt(t, sizeof t, "%s: drop %.2f points, val accuracy %.2f%%", nm, 100 * s->drop, 100 * s->val_accuracy);
        shorten(nm, 28);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\" dominant-baseline=\"middle\">", p.x - 6, cy);
        TEXTZ(f, nm);
        fputs("</text>\n", f);
        if (!isfinite(s->drop)) continue;
        double x1 = p.x + (100 * s->drop - p.ylo) / (p.yhi - p.ylo) * p.w;
        fprintf(f, "<rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.1f\" fill=\"#D55E00\"><title>", fmin(x0, x1),
                cy - bh * 0.35, fmax(fabs(x1 - x0), 0.5), bh * 0.7);
        TEXTZ(f, t);
        fputs("</title></rect>\n", f);
        /* the value beside the bar; right of the zero line for negative drops */
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" dominant-baseline=\"middle\" font-size=\"11\" fill=\"#5b6475\">"
                   "%.2f</text>\n", fmax(x0, x1) + 4, cy, 100 * s->drop);
    }
    fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#8a93a5\"/>\n", x0, p.y, x0, p.y + p.h);
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"13\">validation accuracy drop vs float "
               "(percentage points)</text>\n", p.x + p.w / 2, H - 10);
    legend(f, p.x + p.w + 24, p.y, it, 1);
    fputs("</svg>\n", f);
}

/* ---- HTML ---- */

static const char css[] =
    "body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,'Helvetica Neue',Arial,sans-serif;"
    "color:#1d2330;background:#fff;margin:0}\n"
    "main{max-width:1180px;margin:0 auto;padding:20px 24px 48px}\n"
    "h1{font-size:24px;margin:8px 0 4px}\n"
    "h2{font-size:18px;margin:32px 0 10px;padding-bottom:4px;border-bottom:1px solid #e3e6ec}\n"
    "h3{font-size:15px;margin:18px 0 6px}\n"
    ".meta{color:#5b6475;margin:0}\n"
    ".meta b{color:#1d2330;font-weight:600}\n"
    "p.how{max-width:60em}\n"
    "table{border-collapse:collapse;font-size:13px;font-variant-numeric:tabular-nums}\n"
    "th,td{padding:4px 8px;text-align:right;white-space:nowrap;border-bottom:1px solid #e8eaef}\n"
    "th{background:#f4f6f9;font-weight:600;vertical-align:bottom;line-height:1.25}\n"
    "th .u{display:block;font-weight:400;color:#5b6475;font-size:11.5px}\n"
    ".l{text-align:left}\n"
    "tbody+tbody{border-top:2px solid #c9ced8}\n"
    "tr.float td{background:#f3f4f6}\n"
    "tr.chosen td{background:#fff6db}\n"
    ".star{color:#a66f00;font-weight:700}\n"
    ".na{color:#9aa1ad}\n"
    ".note{font-size:12.5px;color:#5b6475;max-width:70em}\n"
    ".empty{color:#5b6475;font-style:italic}\n"
    "svg{max-width:100%;height:auto;display:block;margin:6px 0 4px}\n"
    "svg text{font-family:system-ui,-apple-system,'Segoe UI',Roboto,Arial,sans-serif}\n"
    ".pair{display:flex;flex-wrap:wrap;gap:12px 40px}\n"
    ".pair figure{margin:0}\n"
    "figure{margin:0 0 12px}\n"
    "figcaption{font-size:13px;color:#5b6475}\n"
    "code{font-size:12.5px;background:#f4f6f9;padding:1px 4px;border-radius:3px;white-space:nowrap}\n"
    "ul.ov{columns:16em 4;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12.5px}\n"
    "a{color:#0b5cad}\n"
    ".scroll{overflow-x:auto}\n";

static void na(FILE *f, const char *cls, const char *key)
{
    fprintf(f, "<td class=\"na%s%s\"%s%s%s>-</td>", cls ? " " : "", cls ? cls : "", key ? " data-key=\"" : "",
            key ? key : "", key ? "\"" : "");
}

static void td_pct(FILE *f, const char *key, double v)
{
    if (!acc_ok(v)) na(f, NULL, key);
    else fprintf(f, "<td data-key=\"%s\">%.2f%%</td>", key, 100 * v);
}

static void td_bytes(FILE *f, const char *key, long v, int estimated)
{
    char b[40];
    if (v <= 0) na(f, NULL, key);
    else fprintf(f, "<td data-key=\"%s\">%s%s</td>", key, estimated ? "\xE2\x89\x88" : "", thousands(b, sizeof b, v));
}

static void td_text(FILE *f, const char *key, const char *s, size_t n)
{
    fprintf(f, "<td class=\"l\" data-key=\"%s\">", key);
    put_text(f, s, n);
    fputs("</td>", f);
}

static void summary_row(FILE *f, const compare_results *r, int i)
{
    const cmp_run *u = &r->runs[i];
    int chosen = u->chosen && is_ptq(u);
    char b[64], m[8];
    fprintf(f, "<tr data-run=\"%d\"%s>", i, chosen ? " class=\"chosen\"" : "");
    td_text(f, "spec", u->spec, sizeof u->spec);
    snprintf(m, sizeof m, "%s", is_ptq(u) ? "PTQ" : SAME(u->method, "qat") ? "QAT" : "");
    if (m[0]) fprintf(f, "<td class=\"l\" data-key=\"method\">%s</td>", m);
    else td_text(f, "method", u->method, sizeof u->method);
    fputs("<td class=\"l\" data-key=\"calib\">", f);
    TEXT(f, u->calib);
    if (chosen) fputs(" <span class=\"star\" title=\"chosen on the validation split\">\xE2\x98\x85</span>", f);
    fputs("</td>", f);
    td_pct(f, "val_accuracy", u->val_accuracy);
    td_pct(f, "test_accuracy", u->test_accuracy);
    if (u->exported) td_pct(f, "int8_test_accuracy", u->int8_test_accuracy);
    else na(f, NULL, "int8_test_accuracy");
    double d = run_drop(r, u);
    if (isfinite(d)) fprintf(f, "<td data-key=\"test_accuracy_drop\">%.2f</td>", 100 * d);
    else na(f, NULL, "test_accuracy_drop");
    td_bytes(f, "model_bytes", u->model_bytes, !u->exported);
    double ratio = run_ratio(r, u);
    if (isfinite(ratio)) fprintf(f, "<td data-key=\"compression_vs_float\">%.2f\xC3\x97</td>", ratio);
    else na(f, NULL, "compression_vs_float");
    if (u->exported && isfinite(u->int8_images_per_s) && u->int8_images_per_s >= 0)
        fprintf(f, "<td data-key=\"int8_images_per_s\">%s</td>",
                thousands(b, sizeof b, (long long)llround(u->int8_images_per_s)));
    else na(f, NULL, "int8_images_per_s");
    if (u->exported) {
        td_pct(f, "top1_agreement", u->top1_agreement);
        td_pct(f, "logit_agreement", u->logit_agreement);
        fprintf(f, "<td data-key=\"max_logit_diff_steps\">%d</td>", u->max_logit_diff_steps);
    } else {
        na(f, NULL, "top1_agreement");
        na(f, NULL, "logit_agreement");
        na(f, NULL, "max_logit_diff_steps");
    }
    if (isfinite(u->seconds)) fprintf(f, "<td data-key=\"seconds\">%.1f</td>", u->seconds);
    else na(f, NULL, "seconds");
    fputs("</tr>\n", f);
}

static void summary_table(FILE *f, const compare_results *r)
{
    char b[40];
    int nr = clampn(r->n_runs, CMP_MAX_RUNS), any_est = 0, any_chosen = 0;
    fputs("<div class=\"scroll\"><table class=\"summary\">\n<thead><tr>"
          "<th class=\"l\">spec</th><th class=\"l\">method</th><th class=\"l\">calibrator</th>"
          "<th>val acc<span class=\"u\">fake-quant</span></th>"
          "<th>test acc<span class=\"u\">fake-quant</span></th>"
          "<th>test acc<span class=\"u\">int8 runtime</span></th>"
          "<th>drop vs float<span class=\"u\">points</span></th>"
          "<th>model size<span class=\"u\">bytes</span></th>"
          "<th>smaller<span class=\"u\">than float</span></th>"
          "<th>int8 speed<span class=\"u\">images/s</span></th>"
          "<th>top-1 agree<span class=\"u\">int8 vs fq</span></th>"
          "<th>logit agree<span class=\"u\">int8 vs fq</span></th>"
          "<th>max diff<span class=\"u\">logit steps</span></th>"
          "<th>time<span class=\"u\">s</span></th>"
          "</tr></thead>\n", f);
    fputs("<tbody><tr class=\"float\" data-run=\"float\"><td class=\"l\">float</td><td class=\"l\">baseline</td>"
          "<td class=\"l\">-</td>", f);
    td_pct(f, "float_val_accuracy", r->float_val_accuracy);
    td_pct(f, "float_test_accuracy", r->float_test_accuracy);
    na(f, NULL, NULL);
    na(f, NULL, NULL);
    if (r->float_bytes > 0) fprintf(f, "<td data-key=\"float_bytes\">%s</td>", thousands(b, sizeof b, r->float_bytes));
    else na(f, NULL, NULL);
    na(f, NULL, NULL); /* ratio: the baseline itself */
    for (int k = 0; k < 5; k++) na(f, NULL, NULL);
    fputs("</tr></tbody>\n", f);

    char cat[CMP_MAX_SPECS + CMP_MAX_RUNS][32];
    int n_given, nc = spec_categories(r, cat, CMP_MAX_SPECS + CMP_MAX_RUNS, &n_given);
    for (int c = 0; c < nc; c++) {
        int any = 0;
        for (int pass = 0; pass < 2; pass++)
            for (int i = 0; i < nr; i++) {
                const cmp_run *u = &r->runs[i];
                if (!streq_n(u->spec, cat[c], 32) || is_ptq(u) != (pass == 0)) continue;
                if (!any) fputs("<tbody>\n", f);
                any = 1;
                any_est |= !u->exported && u->model_bytes > 0;
                any_chosen |= u->chosen && is_ptq(u);
                summary_row(f, r, i);
            }
        if (any) fputs("</tbody>\n", f);
    }
    fputs("</table></div>\n<p class=\"note\">", f);
    if (any_chosen)
        fputs("<span class=\"star\">\xE2\x98\x85</span> the PTQ calibrator chosen for that spec (best fake-quant "
              "accuracy on the validation split; the test set played no part in the choice). ", f);
    fputs("<b>fake-quant</b>: the float model simulating quantization; <b>int8 runtime</b>: the exported model "
          "run by qat's integer kernels. Drop = float test accuracy minus fake-quant test accuracy. "
          "Agreement compares the int8 runtime with fake-quant on the test set (same top-1 class; same int8 "
          "logits); max diff is the largest logit difference in quantization steps. ", f);
    if (any_est) fputs("\xE2\x89\x88: size estimated from bit widths (no int8 model exported). ", f);
    fputs("&#8220;-&#8221;: not measured.</p>\n", f);
}

static void sensitivity_table(FILE *f, const compare_results *r)
{
    char b[40];
    fputs("<table class=\"sens\">\n<thead><tr><th>rank</th><th class=\"l\">unit</th>"
          "<th>val acc<span class=\"u\">only this unit quantized</span></th>"
          "<th>drop vs float<span class=\"u\">points</span></th>"
          "<th>SQNR<span class=\"u\">dB</span></th><th>weight params</th></tr></thead>\n<tbody>\n", f);
    for (int i = 0; i < clampn(r->n_sens, CMP_MAX_SENS); i++) {
        const cmp_sens *s = &r->sens[i];
        fprintf(f, "<tr data-sens=\"%d\"><td data-key=\"rank\">%d</td>", i, i + 1);
        td_text(f, "unit", s->unit, sizeof s->unit);
        td_pct(f, "val_accuracy", s->val_accuracy);
        if (isfinite(s->drop)) fprintf(f, "<td data-key=\"accuracy_drop\">%.2f</td>", 100 * s->drop);
        else na(f, NULL, "accuracy_drop");
        if (isfinite(s->sqnr_db)) fprintf(f, "<td data-key=\"sqnr_db\">%.2f</td>", s->sqnr_db);
        else if (s->sqnr_db > 0) fputs("<td data-key=\"sqnr_db\">\xE2\x88\x9E</td>", f);
        else na(f, NULL, "sqnr_db");
        fprintf(f, "<td data-key=\"weight_params\">%s</td>", thousands(b, sizeof b, s->weight_params));
        fputs("</tr>\n", f);
    }
    fputs("</tbody></table>\n", f);
}

static void files_table(FILE *f, const compare_results *r)
{
    char b[40];
    fputs("<table class=\"files\">\n<thead><tr><th class=\"l\">run</th><th class=\"l\">checkpoint</th>"
          "<th class=\"l\">int8 model</th><th>int8 file<span class=\"u\">bytes</span></th>"
          "<th class=\"l\">per-layer CSV</th></tr></thead>\n<tbody>\n", f);
    for (int i = 0; i < clampn(r->n_runs, CMP_MAX_RUNS); i++) {
        const cmp_run *u = &r->runs[i];
        char csv[256];
        layer_csv_name(csv, sizeof csv, r, i);
        fputs("<tr><td class=\"l\">", f);
        TEXT(f, u->spec);
        fputs(" ", f);
        TEXT(f, u->method);
        fputs(" ", f);
        TEXT(f, u->calib);
        fputs("</td>", f);
        if (strnlen(u->file, sizeof u->file)) {
            fputs("<td class=\"l\"><code>", f);
            TEXT(f, u->file);
            fputs("</code></td>", f);
        } else {
            na(f, "l", NULL);
        }
        if (u->exported && strnlen(u->int8_file, sizeof u->int8_file)) {
            fputs("<td class=\"l\"><code>", f);
            TEXT(f, u->int8_file);
            fputs("</code></td>", f);
        } else {
            na(f, "l", NULL);
        }
        if (u->exported && u->file_bytes > 0) fprintf(f, "<td>%s</td>", thousands(b, sizeof b, u->file_bytes));
        else na(f, NULL, NULL);
        fprintf(f, "<td class=\"l\"><a href=\"%s\">%s</a></td></tr>\n", csv, csv);
    }
    fputs("</tbody></table>\n", f);
}

static void write_html(FILE *f, const compare_results *r)
{
    char b[64], b2[64], b3[64];
    fputs("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
          "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>qat compare: ", f);
    TEXT(f, r->model);
    fprintf(f, "</title>\n<style>\n%s</style>\n</head>\n<body>\n<main>\n<h1>qat compare: ", css);
    TEXT(f, r->model);
    fputs("</h1>\n<p class=\"meta\">float checkpoint <code>", f);
    TEXT(f, r->from);
    fprintf(f, "</code> &#183; <b>%s</b> test images &#183; <b>%s</b> validation &#183; <b>%s</b> calibration "
               "&#183; QAT <b>%d</b> epoch%s &#183; <b>%d</b> thread%s &#183; <b>%.1f</b> s in all</p>\n",
            thousands(b, sizeof b, r->test_images), thousands(b2, sizeof b2, r->val_images),
            thousands(b3, sizeof b3, r->calib_images), r->qat_epochs, r->qat_epochs == 1 ? "" : "s", r->threads,
            r->threads == 1 ? "" : "s", isfinite(r->seconds) ? r->seconds : 0.0);

    fputs("<h2 id=\"how\">How to read this</h2>\n<p class=\"how\">Each row of the summary is one way of "
          "quantizing the same float model. <b>PTQ</b> calibrates the quantizers on a few images without "
          "training; <b>QAT</b> fine-tunes with quantization simulated in the forward pass (<i>wXaY</i>: X-bit "
          "weights, Y-bit activations). Compare the test accuracy with the float row: the drop is what the "
          "quantization costs, the size column what it saves. The int8 columns come from the exported model "
          "run by the integer runtime; they should agree with fake-quant (top-1 agreement of at least 99.9%, "
          "logits at most one step apart). The calibrator (&#9733;) was chosen on the validation split, so the "
          "test numbers are an honest estimate for it; picking the best test number by eye is not. If a "
          "low-bit spec loses too much, the per-layer chart and the sensitivity ranking show which units to "
          "keep at higher precision (<code>--override NAME=w8a8</code>, or <code>--budget</code> to let "
          "compare propose it). All numbers are also in <a href=\"results.json\">results.json</a>.</p>\n", f);

    fputs("<h2 id=\"summary\">Summary</h2>\n", f);
    summary_table(f, r);

    fputs("<h2 id=\"accuracy\">Accuracy vs bit width</h2>\n<figure>\n", f);
    chart_accuracy(f, r);
    fputs("<figcaption>Fake-quant test accuracy of every run per spec; the dashed line is the float model. "
          "Hover a marker for its value.</figcaption>\n</figure>\n", f);

    fputs("<h2 id=\"layers\">Per-layer SQNR</h2>\n<p class=\"note\">Signal-to-quantization-noise ratio of each "
          "unit's output, float vs quantized, on the same test batch: 10&#183;log10(signal power / error power). "
          "Each 6 dB is about one bit. Full numbers (cosine, SQNR, MSE) are in the per-layer CSV files.</p>\n", f);
    char cat[CMP_MAX_SPECS + CMP_MAX_RUNS][32];
    int n_given, nc = spec_categories(r, cat, CMP_MAX_SPECS + CMP_MAX_RUNS, &n_given);
    if (nc == 0) fputs("<p class=\"empty\">No quantized runs.</p>\n", f);
    for (int c = 0; c < nc; c++) {
        fputs("<h3>", f);
        TEXT(f, cat[c]);
        fputs("</h3>\n<figure>\n", f);
        if (chart_sqnr(f, r, cat[c]))
            fputs("<figcaption>\xE2\x88\x9E: the unit's output is identical to float (infinite SQNR); its bar is "
                  "drawn pale, to the top.</figcaption>\n", f);
        fputs("</figure>\n", f);
    }

    fputs("<h2 id=\"training\">QAT training curves</h2>\n", f);
    int any_hist = r->n_float_epochs > 0;
    for (int i = 0; i < clampn(r->n_runs, CMP_MAX_RUNS); i++) any_hist |= r->runs[i].n_epochs > 0;
    if (!any_hist) {
        fputs("<p class=\"empty\">No training history (no QAT epochs were run).</p>\n", f);
    } else {
        fputs("<div class=\"pair\">\n<figure>\n", f);
        chart_history(f, r, 0);
        fputs("<figcaption>Training loss per epoch.</figcaption>\n</figure>\n<figure>\n", f);
        chart_history(f, r, 1);
        fprintf(f, "<figcaption>%s accuracy (fake-quant for QAT) after each epoch.</figcaption>\n</figure>\n</div>\n",
                r->val_images > 0 ? "Validation" : "Test");
        fputs("<p class=\"note\">The dashed grey line is the float model's own training, from its checkpoint.</p>\n",
              f);
    }

    if (r->n_sens > 0) {
        fputs("<h2 id=\"sensitivity\">Sensitivity</h2>\n<p class=\"note\">Each unit quantized alone at <b>", f);
        TEXT(f, r->sens_spec);
        fputs("</b> (all others float), ranked by the validation accuracy it costs. The top units are the "
              "ones to keep at higher precision.</p>\n<figure>\n", f);
        chart_sensitivity(f, r);
        fputs("</figure>\n", f);
        sensitivity_table(f, r);
        fputs("<p class=\"note\">Also in <a href=\"sensitivity.csv\">sensitivity.csv</a>.</p>\n", f);
    }

    if (r->n_overrides > 0 || r->budget_bytes > 0) {
        fputs("<h2 id=\"mixed\">Mixed precision</h2>\n<p>", f);
        if (r->budget_bytes > 0) fprintf(f, "Budget <b>%s</b> bytes. ", thousands(b, sizeof b, r->budget_bytes));
        if (strnlen(r->overrides_file, sizeof r->overrides_file)) {
            fputs("Overrides written to <code>", f);
            TEXT(f, r->overrides_file);
            fputs("</code>", f);
            fprintf(f, " (%d unit%s):", r->n_overrides, r->n_overrides == 1 ? "" : "s");
        } else {
            fprintf(f, "%d override%s:", r->n_overrides, r->n_overrides == 1 ? "" : "s");
        }
        fputs("</p>\n", f);
        if (r->n_overrides > 0) {
            fputs("<ul class=\"ov\">\n", f);
            for (int i = 0; i < clampn(r->n_overrides, CMP_MAX_SENS); i++) {
                fputs("<li>", f);
                TEXT(f, r->overrides[i]);
                fputs("</li>\n", f);
            }
            fputs("</ul>\n", f);
        } else {
            fputs("<p class=\"empty\">No unit needed a different precision.</p>\n", f);
        }
    }

    fputs("<h2 id=\"files\">Files</h2>\n", f);
    files_table(f, r);
    fputs("<p class=\"note\">Written by <code>qat compare</code>. Everything on this page is in "
          "<a href=\"results.json\">results.json</a>; per-layer numbers are in the CSV files.</p>\n"
          "</main>\n</body>\n</html>\n", f);
}

int report_write(const char *dir, const compare_results *r)
{
    char path[1280];
    FILE *f;
    if (make_dir(dir)) return 1;

    if (!(f = open_out(dir, "results.json", path, sizeof path))) return 1;
    report_json(f, r);
    if (close_out(f, path)) return 1;

    for (int i = 0; i < clampn(r->n_runs, CMP_MAX_RUNS); i++) {
        const cmp_run *u = &r->runs[i];
        char name[256];
        layer_csv_name(name, sizeof name, r, i);
        if (!(f = open_out(dir, name, path, sizeof path))) return 1;
        fputs("name,cosine,sqnr_db,mse\n", f);
        for (int l = 0; l < clampn(u->n_layers, CMP_MAX_LAYERS); l++) {
            const cmp_layer *L = &u->layers[l];
            csv_field(f, L->name, sizeof L->name);
            fputc(',', f);
            csv_num(f, L->cosine);
            fputc(',', f);
            csv_num(f, L->sqnr_db);
            fputc(',', f);
            csv_num(f, L->mse);
            fputc('\n', f);
        }
        if (close_out(f, path)) return 1;
    }

    if (r->n_sens > 0) {
        if (!(f = open_out(dir, "sensitivity.csv", path, sizeof path))) return 1;
        fputs("rank,unit,val_accuracy,accuracy_drop,sqnr_db,weight_params\n", f);
        for (int i = 0; i < clampn(r->n_sens, CMP_MAX_SENS); i++) {
            const cmp_sens *s = &r->sens[i];
            fprintf(f, "%d,", i + 1);
            csv_field(f, s->unit, sizeof s->unit);
            fputc(',', f);
            csv_num(f, s->val_accuracy);
            fputc(',', f);
            csv_num(f, s->drop);
            fputc(',', f);
            csv_num(f, s->sqnr_db);
            fprintf(f, ",%ld\n", s->weight_params);
        }
        if (close_out(f, path)) return 1;
    }

    if (!(f = open_out(dir, "report.html", path, sizeof path))) return 1;
    write_html(f, r);
    return close_out(f, path);
}
