/* rel.h - helpers shared by the reliability tests.
 *
 * rel_real_model replaces the config-only "tiny" folder that svc_init leaves with a real
 * random-weight model made by `bitnetctl init-model --shape tiny`.
 *
 * An output folder at its final name must be complete: its compression_metadata.json
 * lists every other file with its size and SHA-256, and every listed file must match.
 * A folder still being written is named "<name>.partial" and is never an output.
 */
#ifndef BN_TEST_REL_H
#define BN_TEST_REL_H

#include <stddef.h>

/* <models_dir>/tiny becomes a real model (seed chooses its weights); fails the test otherwise. */
void rel_real_model(const char *models_dir, int seed);

/* Verifies one output folder; on failure writes the reason into why and returns 0. */
int out_folder_complete(const char *dir, char *why, size_t len);
/* Verifies every non-.partial folder directly under root; returns how many were checked
 * and -1 (with why) on the first incomplete one. */
int out_root_complete(const char *root, char *why, size_t len);
/* Number of "*.partial" entries directly under root. */
int out_root_partials(const char *root);

#endif
