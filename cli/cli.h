/* daxfsctl: shared declarations of the command table. */
#ifndef DAXFSCTL_CLI_H
#define DAXFSCTL_CLI_H

struct cli_cmd {
	const char *name;
	const char *usage;
	const char *help;
	int (*run)(int argc, char **argv);
};

extern const struct cli_cmd region_cmds[];
extern const struct cli_cmd daemon_cmds[];
extern const struct cli_cmd mount_cmds[];

/* Print "daxfsctl: msg" once, on stderr. */
__attribute__((format(printf, 1, 2)))
void cli_error(const char *fmt, ...);
int cli_usage(const struct cli_cmd *c, int code);
const struct cli_cmd *cli_find(const char *name);

#endif
