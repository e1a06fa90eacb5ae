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
    int fine_tune_rows;
    char msg[512]; /* the first violation, empty when the run is correct */
} tc_report;

/* The run of job_id in the state (NULL if none, or if there is more than one). */
const struct cJSON *tc_find_run(const struct cJSON *state, const char *job_id);
/* Returns true when the run satisfies everything above (exitcode as given). */
bool tc_check_run(const struct cJSON *state, const char *job_id, int exitcode, tc_report *rep);
/* History and summary of a run with _runtime/_timestamp/_wandb removed, as canonical
 * JSON text: equal for an online run and a replayed offline run of the same job. */
char *tc_canonical_run(const struct cJSON *run);

#endif
