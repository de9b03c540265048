/* qat/schedule.h: staged QAT (`qat train --schedule`).
 *
 * A quantization schedule is a list of stages, each a number of epochs
 * with its own unit spec, the part of the quantizers that fake-quantize
 * (weights, activations or both) and how many units (in qmodel order, the
 * order `qat inspect` lists them) fake-quantize; the others run float:
 *
 *   SCHEDULE := STAGE (',' STAGE)*
 *   STAGE    := [ITEM ('+' ITEM)*] ':' EPOCHS
 *   ITEM     := SPEC                 any spec qat_unit_config_parse accepts
 *                                    (default: the run's --quant)
 *             | 'weights' | 'acts'   only that part fake-quantizes
 *             | 'units=' K           only the first K units fake-quantize
 *             | 'all'                both parts, every unit (the default)
 *
 *   w8a8:1,w4a4:1,w2a8:3       bit widths step down
 *   weights:1,all:2            (with --quant w4a4) weights first
 *   w4a4+units=3:1,w4a4:2      the first 3 units first
 *
 * Each item kind may appear once per stage; a stage without a spec uses the
 * default spec (parse fails if there is none). How a run moves between
 * stages (tools/train.c; docs/QUANT.md, "Staged QAT"): a stage whose spec
 * differs from the previous one's re-prepares the qmodel from the float
 * model and calibrates it afresh; a stage with the same spec keeps the
 * quantizers and only changes the switches (qat_qmodel_set_stage_fake_quant).
 */
#ifndef QAT_SCHEDULE_H
#define QAT_SCHEDULE_H

#include "optim.h"
#include "quant.h"

#ifdef __cplusplus
extern "C" {
#endif

#define QAT_MAX_STAGES 16
#define QAT_STAGE_SPEC_MAX 32
/* Longest canonical schedule text (qat_quant_schedule_format), with NUL. */
#define QAT_SCHEDULE_TEXT_MAX 256

/* Which quantizers of the selected units fake-quantize. */
typedef enum {
    QAT_STAGE_ALL = 0, /* weights and activations */
    QAT_STAGE_WEIGHTS, /* weight (and bias-grid) quantizers only: activations float */
    QAT_STAGE_ACTS,    /* activation quantizers only: weights float */
    QAT_STAGE_PART_COUNT
} qat_stage_part;

/* "all", "weights", "acts"; NULL if out of range. */
QAT_API const char *qat_stage_part_name(qat_stage_part p);

typedef struct qat_stage {
    char spec[QAT_STAGE_SPEC_MAX]; /* resolved: never empty after a parse */
    qat_stage_part part;
    int units;                     /* 0: every unit; K >= 1: units 0..K-1 */
    int epochs;                    /* >= 1 */
} qat_stage;

typedef struct qat_quant_schedule {
    int n;                         /* stages, 1..QAT_MAX_STAGES */
    qat_stage stage[QAT_MAX_STAGES];
} qat_quant_schedule;

/* Parses text (grammar above) into *out; default_spec (may be NULL) fills
 * the stages that name no spec. QAT_ERR_ARG with a message naming the stage
 * and the grammar for anything else (every spec is checked with
 * qat_unit_config_parse). */
QAT_API int qat_quant_schedule_parse(const char *text, const char *default_spec, qat_quant_schedule *out);

/* The canonical text of s (every spec written out, "+weights"/"+acts",
 * "+units=K", ":EPOCHS"), which parses back to s: what checkpoints store.
 * QAT_ERR_ARG if it does not fit in n bytes. */
QAT_API int qat_quant_schedule_format(const qat_quant_schedule *s, char *buf, size_t n);

/* Sum of the stages' epochs. */
QAT_API int qat_quant_schedule_epochs(const qat_quant_schedule *s);

/* The stage that covers epoch ep (0-based); epochs past the end belong to
 * the last stage, negative ones to the first. */
QAT_API int qat_quant_schedule_stage_at(const qat_quant_schedule *s, int ep);

/* The fake-quant switches of stage st: units 0..st->units-1 (all if 0)
 * fake-quantize the part st->part, the others run float (both quantizers
 * off). Observers are not touched: a quantizer that is off still observes
 * when observing is on (its range follows the float values). QAT_ERR_ARG
 * when st->units exceeds the qmodel's units (the message gives both). */
QAT_API int qat_qmodel_set_stage_fake_quant(qat_qmodel *qm, const qat_stage *st);

/* A new optimizer over params[0..n-1] that continues `old`: the same kind,
 * options, schedule, step count and lr; every parameter whose tensor old
 * also updates (same name, same tensor) keeps its per-parameter step count,
 * group settings and state buffers (momentum, Adam moments), bit for bit;
 * the others (new LSQ scales after a re-prepare) start fresh, as
 * qat_optim_create makes them. old is not changed. NULL on failure. */
QAT_API qat_optim *qat_optim_continue(qat_optim *old, const qat_named_tensor *params, int n);

#ifdef __cplusplus
}
#endif
#endif
