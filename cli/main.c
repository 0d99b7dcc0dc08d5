/* daxfsctl: the command table and dispatch. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "daxfs.h"

void cli_error(const char *fmt, ...)
{
	va_list ap;

	fputs("daxfsctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static const struct cli_cmd *const groups[] = { region_cmds, daemon_cmds, mount_cmds, NULL };

const struct cli_cmd *cli_find(const char *name)
{
	for (int g = 0; groups[g]; g++)
		for (const struct cli_cmd *c = groups[g]; c->name; c++)
			if (!strcmp(c->name, name))
				return c;
	return NULL;
}

int cli_usage(const struct cli_cmd *c, int code)
{
	FILE *out = code ? stderr : stdout;

	fprintf(out, "usage: daxfsctl %s %s\n\n%s\n", c->name, c->usage, c->help);
	return code;
}

static int usage(int code)
{
	FILE *out = code ? stderr : stdout;

	fprintf(out, "usage: daxfsctl COMMAND [OPTIONS]\n\ncommands:\n");
	for (int g = 0; groups[g]; g++)
		for (const struct cli_cmd *c = groups[g]; c->name; c++)
			fprintf(out, "  %-7s %s\n", c->name, c->usage);
	fprintf(out, "\n'daxfsctl COMMAND --help' describes a command.  Commands that talk to\n"
		"daxfsd use --address SOCK, else $DAXFS_ADDRESS, else /run/daxfs/daxfsd.sock.\n");
	return code;
}

int main(int argc, char **argv)
{
	const struct cli_cmd *c;

	if (argc < 2)
		return usage(2);
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
	    !strcmp(argv[1], "help"))
		return usage(0);
	if (!strcmp(argv[1], "--version")) {
		printf("daxfsctl %s\n", daxfs_version());
		return 0;
	}
	c = cli_find(argv[1]);
	if (!c) {
		cli_error("unknown command '%s' (see daxfsctl --help)", argv[1]);
		return 2;
	}
	for (int i = 2; i < argc; i++)
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
			return cli_usage(c, 0);
	return c->run(argc - 1, argv + 1);
}
