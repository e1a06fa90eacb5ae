/* fake_hub.h - a fake Hugging Face Hub for tests (libmicrohttpd, 127.0.0.1 only).
 *
 * It serves model folders from disk through the part of the Hub's HTTP protocol that
 * engine/hub/hub.c and huggingface_hub use:
 *   GET  /api/models/ORG/NAME/revision/REV[?blobs=true]   {"id","sha","siblings":[{
 *        "rfilename","size","blobId","lfs":{"sha256","size","pointerSize"}}]}
 *   HEAD|GET /ORG/NAME/resolve/REV/FILE   plain files: 200 (Range honoured) with ETag
 *        (the git blob id) and X-Repo-Commit; LFS files (*.safetensors, *.bin): 302 to
 *        /cdn-lfs/<sha256> with X-Repo-Commit, X-Linked-Etag, X-Linked-Size
 *   GET  /cdn-lfs/<sha256>                  the content, Range honoured (206/416)
 * REV is "main" or the repository's commit (the sha1 of its files' ids). Errors carry
 * X-Error-Code as the Hub does: 401 GatedRepo (a gated repository without its token),
 * 404 RepoNotFound / RevisionNotFound / EntryNotFound.
 * Faults: the next N requests answered with a status (429 + Retry-After, 5xx), the next
 * N content transfers of a file cut after K bytes (connection closed), a file served
 * with one byte changed.
 */
#ifndef FAKE_HUB_H
#define FAKE_HUB_H

#include <stdbool.h>
#include <stdint.h>

typedef struct fake_hub fake_hub;

fake_hub *fake_hub_start(void);
void fake_hub_stop(fake_hub *h);
/* "http://127.0.0.1:PORT" (owned by h). */
const char *fake_hub_url(const fake_hub *h);
/* Serves every regular file of dir (not recursive) as ORG/NAME. token: NULL for a public
 * repository, else it is gated and every request must carry "Bearer token". */
int fake_hub_add_repo(fake_hub *h, const char *repo, const char *dir, const char *token);
/* The commit of a repository (40 hex), or NULL. */
const char *fake_hub_commit(const fake_hub *h, const char *repo);
/* The next n requests (any path) are answered status, with Retry-After when >= 0. */
void fake_hub_fail_next(fake_hub *h, int status, int retry_after_s, int n);
/* The next n content transfers of file (its name in the repository) stop after
 * after_bytes bytes of the body, closing the connection. */
void fake_hub_drop_next(fake_hub *h, const char *file, uint64_t after_bytes, int n);
/* Serve file with its middle byte changed (the listing keeps the true sha256). */
void fake_hub_corrupt(fake_hub *h, const char *file, bool on);

typedef struct fake_hub_stats {
    int api, resolve, cdn, head;  /* requests per kind */
    int ranged;                   /* content requests that carried a Range from > 0 */
    int faults;                   /* answers from fail_next / drop_next */
    uint64_t body_bytes;          /* content bytes sent (resolve + cdn) */
    bool saw_token;               /* some request carried an Authorization header */
} fake_hub_stats;
fake_hub_stats fake_hub_get_stats(fake_hub *h);

#endif
