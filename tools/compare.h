/* qat compare: the results of one comparison, and the report writer.
 * compare.c fills a compare_results; report.c turns it into results.json,
 * per-layer CSV files and a self-contained report.html. */
#ifndef QAT_TOOLS_COMPARE_H
#define QAT_TOOLS_COMPARE_H

#include <stdio.h>

#define CMP_MAX_LAYERS 64
#define CMP_MAX_EPOCHS 32
#define CMP_MAX_RUNS 96
#define CMP_MAX_SPECS 8
#define CMP_MAX_SENS 64

typedef struct cmp_layer {
    char name[64];        /* unit name (as --override takes it) */
    double cosine;        /* float vs quantized activations, same test batch */
    double sqnr_db;       /* +inf when identical (written as null in JSON) */
    double mse;
} cmp_layer;

typedef struct cmp_epoch {
    int epoch;            /* 1-based */
    double train_loss, train_accuracy, val_accuracy, test_accuracy;
} cmp_epoch;

typedef struct cmp_run {
    char spec[32];        /* "w8a8", ... or "mixed" */
    char method[24];      /* "ptq", "qat", or PTQ with methods: "cle", "cle+bc", "adaround", ... (--methods) */
    char calib[16];       /* PTQ: calibrator; QAT: "lsq" (learnable scales) or "ema" */
    double val_accuracy;  /* fake-quant, validation split (what choices use) */
    double test_accuracy; /* fake-quant, test set */
    int chosen;           /* PTQ: the calibrator chosen on the validation split for this spec */
    int exported;         /* an int8 model was written and run */
    double int8_test_accuracy;  /* in the integer runtime */
    double int8_images_per_s;   /* runtime throughput, batch 256 */
    double top1_agreement;      /* int8 vs fake-quant, test set */
    double logit_agreement;
    double f32_top1_agreement;  /* the same vs the float32 fake-quant graph */
    double f32_logit_agreement;
    int max_logit_diff_steps;
    long model_bytes;     /* int8 payload bytes (weights stored one per byte at any bit width, plus
                           * int32 bias/multiplier/shift per channel): measured when exported, else estimated */
    long file_bytes;      /* the int8 file's size when exported, else 0 */
    double seconds;       /* time spent on this run (calibration or training, export, evaluation) */
    char file[320];       /* the checkpoint written */
    char int8_file[320];  /* the int8 model written ("" if none) */
    int n_layers;
    cmp_layer layers[CMP_MAX_LAYERS];
    int n_epochs;         /* QAT training history */
    cmp_epoch history[CMP_MAX_EPOCHS];
} cmp_run;

typedef struct cmp_sens {
    char unit[64];
    double val_accuracy;  /* only this unit quantized (others float), validation split */
    double drop;          /* float val accuracy - val_accuracy (points as a fraction) */
    double sqnr_db;       /* of this unit's output */
    long weight_params;   /* parameters of the unit's weight (0 for activation-only units) */
} cmp_sens;

typedef struct compare_results {
    char model[32];
    char from[256];
    char out_dir[256];
    int threads;
    int test_images, val_images, calib_images, qat_epochs;
    char methods[200];      /* --methods as run: "ptq,qat", "ptq,cle,cle+bc,adaround" */
    int per_tensor_weights; /* --per-tensor-weights (PTQ rows) */
    int adaround_iters, adaround_images, bc_images; /* settings of rows with adaround / bc */
    double float_val_accuracy, float_test_accuracy;
    long float_bytes;     /* 4 x parameters */
    int n_float_epochs;   /* the float checkpoint's own history */
    cmp_epoch float_history[CMP_MAX_EPOCHS];
    int n_specs;
    char specs[CMP_MAX_SPECS][32];
    int n_runs;
    cmp_run runs[CMP_MAX_RUNS];
    /* sensitivity (empty when not requested) */
    char sens_spec[32];
    int n_sens;
    cmp_sens sens[CMP_MAX_SENS]; /* ranked: largest drop first */
    /* mixed precision (empty when no --budget) */
    long budget_bytes;
    char overrides_file[256];
    int n_overrides;
    char overrides[CMP_MAX_SENS][96]; /* "NAME=SPEC" */
    double seconds;
} compare_results;

/* The whole result as one JSON object (the --json output and results.json). */
void report_json(FILE *f, const compare_results *r);
/* Writes DIR/results.json, DIR/layers-<spec>-<method>-<calib>.csv (one per
 * run: name,cosine,sqnr_db,mse), DIR/sensitivity.csv when present, and
 * DIR/report.html. Returns 0, or 1 after printing an error. */
int report_write(const char *dir, const compare_results *r);

#endif
