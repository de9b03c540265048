/* PTQ methods beyond calibration (qat/ptq.h) as `qat ptq` and `qat compare
 * --methods` run them: CLE -> calibrate -> AdaRound -> bias correction. */
#ifndef QAT_TOOLS_PTQMETHODS_H
#define QAT_TOOLS_PTQMETHODS_H

#include "qat/ptq.h"
#include "tools/cli.h"

typedef struct ptq_methods {
    int cle, adaround, bc, bca; /* bca: analytic (BN-statistics) bias correction */
    int ar_iters, ar_images, bc_images; /* AdaRound steps per layer; calibration images used */
} ptq_methods;

void ptq_methods_defaults(ptq_methods *pm);
/* "ptq" (none), or methods joined by '+' in any order: cle, adaround (ar),
 * bc (bias-correction), bca (analytic bias correction; not with bc). 0, or
 * 1 after printing an error. */
int ptq_methods_parse(const char *s, ptq_methods *pm);
/* canonical name: "ptq" or "cle+adaround+bc" (the applied order) */
const char *ptq_methods_name(const ptq_methods *pm, char *buf, size_t n);
static inline int ptq_methods_any(const ptq_methods *pm) { return pm->cle || pm->adaround || pm->bc || pm->bca; }

/* Uniform integer weights of every unit per tensor (one scale a layer). */
void ptq_per_tensor_weights(qat_qconfig *cfg);
/* CLE on the float model (before prepare); logs what it did. */
int ptq_methods_float(qat_model *m, const ptq_methods *pm);
/* AdaRound and bias correction on the calibrated qmodel, with ref the float
 * parameters after CLE (before anything rounded them) and the first images
 * of the calibration permutation (seed as cli_calibrate's). */
typedef struct ptq_methods_result {
    qat_adaround_report ar;
    qat_biascorr_report bc;
    double ar_seconds, bc_seconds;
} ptq_methods_result;
int ptq_methods_quant(qat_qmodel *qm, const qat_model_snapshot *ref, const qat_dataset *train, int calib_size,
                      uint64_t calib_seed, uint64_t seed, const ptq_methods *pm, ptq_methods_result *res);

/* The /quant attribute "ptq_methods" of a PTQ checkpoint (the canonical
 * name): write after qat_qcheckpoint_save; read gives "ptq" when absent. */
int ptq_methods_write(const char *path, const char *name);
int ptq_methods_read(const char *path, char *buf, size_t n);

#endif
