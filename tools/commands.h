/* The qat subcommands; each returns the process exit status. */
#ifndef QAT_TOOLS_COMMANDS_H
#define QAT_TOOLS_COMMANDS_H

int cmd_train(int argc, char **argv);
int cmd_ptq(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_export(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_compare(int argc, char **argv);

/* size of a file in bytes, -1 if it cannot be read */
long cli_file_bytes(const char *path);

#endif
