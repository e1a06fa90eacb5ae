/* tracker_check.h - assertions on the fake W&B server's final state, shared by the
 * tracker unit tests and the daemon-level acceptance tests.
 *
 * check_run() verifies one job's run the way the acceptance criteria read: one run named
 * after the job, history at offsets 0..n-1 with no hole, gap or conflicting rewrite,
 * _step == offset (strictly increasing), numeric non-decreasing _runtime and a
 * _timestamp, each of the 19 job keys exactly once, a summary holding the 8 phase keys,
 * exactly one complete with the expected exit code and nothing after it, the config sent
 * as a wrapped JSON string, and no file_stream before UpsertBucket.
 */
#ifndef TRACKER_CHECK_H
#define TRACKER_CHECK_H

#include <stdbool.h>

struct cJSON;

extern const char *const tc_job_keys[19];
extern const char *const tc_phase_keys[8];

typedef struct tc_report {
    int n_history;
    int key_counts[19];
    int fine_tune_rows;
    int updated_keys; /* job-level keys whose final value is only in the summary */
    char msg[512]; /* the first violation, empty when the run is correct */
} tc_report;

/* The run of job_id in the state (NULL if none, or if there is more than one). */
const struct cJSON *tc_find_run(const struct cJSON *state, const char *job_id);
/* The structural part: one run, UpsertBucket first, wrapped string config, no gap,
 * hole or conflicting rewrite, _step == offset, _runtime/_timestamp, exactly one
 * complete with this exit code and nothing after it. Fills rep (key_counts too). */
bool tc_check_run(const struct cJSON *state, const char *job_id, int exitcode, tc_report *rep);
/* After tc_check_run: each of the 19 keys exactly once, summary with the 8 phase keys
 * and the 19 keys. */
bool tc_check_19(const struct cJSON *state, const char *job_id, tc_report *rep);
/* The run's values equal what the daemon recorded (GET /v1/jobs/{id}/metrics body):
 * every job-level metric once, every per-step point once, nothing else. */
bool tc_check_values(const struct cJSON *state, const char *job_id,
                     const struct cJSON *api_metrics, tc_report *rep);
/* History and summary of a run with _runtime/_timestamp/_wandb removed, as canonical
 * JSON text: equal for an online run and a replayed offline run of the same job. */
char *tc_canonical_run(const struct cJSON *run);

#endif
