/* The qat subcommands; each returns the process exit status. */
#ifndef QAT_TOOLS_COMMANDS_H
#define QAT_TOOLS_COMMANDS_H

int cmd_train(int argc, char **argv);

#endif
