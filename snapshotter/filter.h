/* containerd's filter syntax (its filters package), for List:
 *
 *   filter    := selector ("," selector)*     all must match
 *   selector  := fieldpath [op value]          no op: the field is present
 *   fieldpath := field ("." field)*
 *   field     := quoted | [A-Za-z0-9_]+
 *   op        := "==" | "!=" | "~="            ~= is a regular expression
 *   value     := quoted | anything up to "," or white space
 *   quoted    := a Go double-quoted string; /re/ and |re| after ~= too
 *
 * Several filters match when any one does; none (or "") match all. */
#ifndef DAXFS_SNAP_FILTER_H
#define DAXFS_SNAP_FILTER_H

#include <stddef.h>

#include "daxfs.h"

struct filter;

/* Field lookup: set *value and return 1 if the field at path (n
 * components) is present, else return 0. */
typedef int (*filter_field_fn)(void *arg, char *const *path, size_t n,
			       const char **value);

int filter_parse(char *const *exprs, size_t n, struct filter **out,
		 struct daxfs_err *err);
int filter_match(const struct filter *f, filter_field_fn field, void *arg);
void filter_free(struct filter *f);

#endif
