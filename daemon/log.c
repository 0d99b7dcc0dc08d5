/* daxfsd logging: "LEVEL message" lines on stderr, one write per line so
 * threads do not interleave. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

static enum log_level threshold = LOG_INFO;
static const char *const names[] = { "error", "warn", "info", "debug" };

int log_set_level(const char *name)
{
	for (int i = 0; i < 4; i++)
		if (!strcmp(name, names[i])) {
			threshold = (enum log_level)i;
			return 0;
		}
	return -EINVAL;
}

void log_msg(enum log_level level, const char *fmt, ...)
{
	char line[2048];
	int n;
	va_list ap;

	if (level > threshold)
		return;
	n = snprintf(line, sizeof(line), "daxfsd %s: ", names[level]);
	va_start(ap, fmt);
	n += vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	if (n > (int)sizeof(line) - 2)
		n = (int)sizeof(line) - 2;
	line[n++] = '\n';
	if (write(STDERR_FILENO, line, (size_t)n) < 0)
		return;
}
