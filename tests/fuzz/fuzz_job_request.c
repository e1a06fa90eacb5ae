/* fuzz_job_request.c - libFuzzer harness: the input is the JSON body of POST /v1/jobs,
 * sent through the real API (see fuzz_http.c, which this file reuses). */
#define BN_FUZZ_JOB_BODY 1
#include "fuzz_http.c"
