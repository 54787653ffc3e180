/* The command line is the program's contract (INTERFACE.md): defaults and recipes, every flag's
 * validation, the argv grammar, and the settings round trip that checkpoints and resume rely on. */
#include <check.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check_main.h"
#include "resnet/config.h"
#include "resnet/util.h"

/* argv from a NULL-terminated list; argv[0] is the program name */
static int parse(Config *c, ...) {
    char *argv[64];
    int argc = 0;
    argv[argc++] = "resnet_mpi";
    va_list ap;
    va_start(ap, c);
    for (char *a; (a = va_arg(ap, char *)) != NULL;) argv[argc++] = a;
    va_end(ap);
    argv[argc] = NULL;
    config_defaults(c);
    return config_parse(c, argc, argv);
}

static void assert_error_mentions(const char *a, const char *b) {
    const char *msg = rn_last_error();
    ck_assert_msg(strstr(msg, a) != NULL, "error '%s' does not mention '%s'", msg, a);
    if (b) ck_assert_msg(strstr(msg, b) != NULL, "error '%s' does not mention '%s'", msg, b);
    ck_assert_msg(strchr(msg, '\n') == NULL, "error '%s' is more than one line", msg);
}

static void setup(void) { unsetenv("RESNET_DATA"); }

/* ---- defaults and recipes ---- */

/* the seed notebook's training settings, which the tuned recipe shares */
static void assert_seed_training(const Config *c) {
    ck_assert_int_eq(c->arch, ARCH_SEED);
    ck_assert_int_eq(c->optimizer, OPT_ADAM);
    ck_assert_float_eq(c->lr, 1e-3f);
    ck_assert_float_eq(c->weight_decay, 1e-4f);
    ck_assert_float_eq(c->momentum, 0.9f);
    ck_assert_int_eq(c->nesterov, 0);
    ck_assert_int_eq(c->schedule, SCHED_CONSTANT);
    ck_assert_int_eq(c->num_milestones, 0);
    ck_assert_int_eq(c->batch_size, 128);
    ck_assert_int_eq(c->epochs, 50);
    ck_assert_int_eq(c->max_steps, 0);
    ck_assert_int_eq(c->eval_every, 50);
    ck_assert_int_eq(c->early_stop, EARLY_STOP_SEED);
}

static void assert_seed_recipe(const Config *c) {
    ck_assert_str_eq(c->recipe, "seed");
    assert_seed_training(c);
    ck_assert_int_eq(c->bn_eval, BN_EVAL_BATCH);
    ck_assert(c->ema == 0);
    ck_assert_int_eq(c->ema_warmup, 0);
    ck_assert_int_eq(c->validate_raw, 1);
}

/* the default: the seed's training with the moving average and reference statistics */
static void assert_tuned_recipe(const Config *c) {
    ck_assert_str_eq(c->recipe, "tuned");
    assert_seed_training(c);
    ck_assert_int_eq(c->bn_eval, BN_EVAL_REFERENCE);
    ck_assert(c->ema == 0.999);
    ck_assert_int_eq(c->ema_warmup, 1);
    ck_assert_int_eq(c->validate_raw, 0);
}

START_TEST(defaults_are_the_tuned_recipe) {
    Config c;
    config_defaults(&c);
    ck_assert_str_eq(c.command, "train");
    ck_assert_str_eq(c.data_dir, "data/cifar-10-batches-bin");
    ck_assert_str_eq(c.dataset, "cifar10");
    ck_assert_int_eq(c.val_size, 5000);
    ck_assert_uint_eq(c.split_seed, 0);
    ck_assert_int_eq(c.limit_train, 0);
    ck_assert_int_eq(c.augment, 1);
    assert_tuned_recipe(&c);
    ck_assert_int_eq(c.depth, 20);
    ck_assert_int_eq(c.patience, 5);
    ck_assert_int_eq(c.sync_bn, 0);
    ck_assert_uint_eq(c.seed, 0);
    ck_assert_int_eq(c.threads, 0);
    ck_assert_str_eq(c.checkpoint_dir, "checkpoints");
    ck_assert_int_eq(c.checkpoint_every, 0);
    ck_assert_int_eq(c.keep, 0);
    ck_assert_str_eq(c.resume, "");
    ck_assert_str_eq(c.metrics, "");
    ck_assert_int_eq(c.progress, PROGRESS_AUTO);
    ck_assert_int_eq(c.quiet, 0);
    ck_assert_str_eq(c.checkpoint, "");
    ck_assert_str_eq(c.split, "test");
    ck_assert_int_eq(c.json, 0);
    ck_assert_int_eq(c.steps, 20);
    ck_assert_int_eq(c.warmup, 3);
    ck_assert_int_eq(c.profile, 0);
    ck_assert_int_eq(c.given.count, 0);
    /* no arguments at all is the tuned run; the seed's is one flag away, and the tuned recipe named
     * after another one restores its own values */
    ck_assert_int_eq(parse(&c, NULL), 0);
    assert_tuned_recipe(&c);
    ck_assert_int_eq(config_validate(&c), 0);
    ck_assert_int_eq(parse(&c, "--recipe", "seed", NULL), 0);
    assert_seed_recipe(&c);
    ck_assert_int_eq(config_validate(&c), 0);
    ck_assert_int_eq(parse(&c, "--recipe", "paper", "--recipe", "tuned", NULL), 0);
    assert_tuned_recipe(&c);
    ck_assert_int_eq(parse(&c, "--ema", "0", "--recipe", "tuned", "--bn-eval", "batch", NULL), 0);
    ck_assert(c.ema == 0);
    ck_assert_int_eq(c.bn_eval, BN_EVAL_BATCH);
    ck_assert_str_eq(c.recipe, "tuned");
}
END_TEST

START_TEST(data_dir_defaults) {
    Config c;
    setenv("RESNET_DATA", "/srv/cifar", 1);
    config_defaults(&c);
    ck_assert_str_eq(c.data_dir, "/srv/cifar");
    setenv("RESNET_DATA", "", 1);   /* empty is unset, not the current folder */
    config_defaults(&c);
    ck_assert_str_eq(c.data_dir, "data/cifar-10-batches-bin");
    unsetenv("RESNET_DATA");
    ck_assert_int_eq(parse(&c, "--dataset", "fashion-mnist", NULL), 0);
    ck_assert_str_eq(c.data_dir, "/usr/share/datasets/fashion-mnist");
    ck_assert_int_eq(parse(&c, "--data", "/tmp/fm", "--dataset", "fashion-mnist", NULL), 0);
    ck_assert_str_eq(c.data_dir, "/tmp/fm");
    ck_assert_int_eq(parse(&c, "--dataset", "cifar10", "--data", "x", NULL), 0);
    ck_assert_str_eq(c.data_dir, "x");
}
END_TEST

static void assert_paper_except_lr(const Config *c) {
    ck_assert_str_eq(c->recipe, "paper");
    ck_assert_int_eq(c->arch, ARCH_PAPER);
    ck_assert_int_eq(c->optimizer, OPT_SGD);
    ck_assert_float_eq(c->momentum, 0.9f);
    ck_assert_float_eq(c->weight_decay, 1e-4f);
    ck_assert_int_eq(c->batch_size, 128);
    ck_assert_int_eq(c->max_steps, 64000);
    /* --epochs must not end the paper's run before its 64,000 steps (182 epochs at 352 steps) */
    ck_assert_int_ge((long)c->epochs * 352, 64000);
    ck_assert_int_eq(c->schedule, SCHED_STEP);
    ck_assert_int_eq(c->num_milestones, 2);
    ck_assert_int_eq(c->milestones[0], 32000);
    ck_assert_int_eq(c->milestones[1], 48000);
    ck_assert_int_eq(c->bn_eval, BN_EVAL_RUNNING);
    ck_assert_int_eq(c->eval_every, 0);
    ck_assert_int_eq(c->early_stop, EARLY_STOP_OFF);
    ck_assert(c->ema == 0);
}

START_TEST(paper_recipe) {
    Config c;
    ck_assert_int_eq(parse(&c, "--recipe", "paper", NULL), 0);
    assert_paper_except_lr(&c);
    ck_assert_float_eq(c.lr, 0.1f);
    ck_assert_int_eq(c.depth, 20);
    ck_assert_int_eq(config_validate(&c), 0);
    ck_assert_str_eq(settings_get(&c.given, "recipe"), "paper");
}
END_TEST

START_TEST(flags_override_the_recipe_in_any_order) {
    Config c;
    ck_assert_int_eq(parse(&c, "--lr", "0.05", "--recipe", "paper", NULL), 0);
    assert_paper_except_lr(&c);
    ck_assert_float_eq(c.lr, 0.05f);
    ck_assert_int_eq(parse(&c, "--recipe", "paper", "--lr", "0.05", NULL), 0);
    assert_paper_except_lr(&c);
    ck_assert_float_eq(c.lr, 0.05f);
    /* several overrides on both sides of the recipe */
    ck_assert_int_eq(parse(&c, "--arch", "seed", "--bn-eval=batch", "--recipe", "paper", "--schedule", "cosine",
                           "--max-steps", "0", "--eval-every", "10", NULL),
                     0);
    ck_assert_int_eq(c.arch, ARCH_SEED);
    ck_assert_int_eq(c.bn_eval, BN_EVAL_BATCH);
    ck_assert_int_eq(c.schedule, SCHED_COSINE);
    ck_assert_int_eq(c.max_steps, 0);
    ck_assert_int_eq(c.eval_every, 10);
    ck_assert_int_eq(c.optimizer, OPT_SGD);
    ck_assert_int_eq(config_validate(&c), 0);
    /* seed after paper: the later recipe wins, and explicit flags still beat it */
    ck_assert_int_eq(parse(&c, "--optimizer", "sgd", "--recipe", "paper", "--recipe", "seed", NULL), 0);
    ck_assert_str_eq(c.recipe, "seed");
    ck_assert_int_eq(c.arch, ARCH_SEED);
    ck_assert_int_eq(c.optimizer, OPT_SGD);
    /* the last of a repeated flag wins */
    ck_assert_int_eq(parse(&c, "--lr", "0.5", "--lr", "0.25", NULL), 0);
    ck_assert_float_eq(c.lr, 0.25f);
}
END_TEST

/* ---- every value of every flag ---- */

typedef struct {
    const char *flag, *value;
} Case;

static const Case bad_values[] = {
    {"dataset", "cifar100"},   {"dataset", ""},          {"val-size", "0"},          {"val-size", "-5"},
    {"val-size", "5k"},        {"val-size", "1e3"},      {"val-size", "99999999999"}, {"split-seed", "-1"},
    {"split-seed", "x"},       {"split-seed", "99999999999999999999999"},             {"limit-train", "-1"},
    {"limit-train", "ten"},    {"limit-train", "1.5"},   {"recipe", "fast"},         {"arch", "resnet"},
    {"depth", "21"},           {"depth", "2"},           {"depth", "0"},             {"depth", "-4"},
    {"depth", "abc"},          {"depth", "1208"},        {"depth", "20.0"},          {"optimizer", "adagrad"},
    {"optimizer", "Adam"},     {"lr", "abc"},            {"lr", "0"},                {"lr", "-0.1"},
    {"lr", "nan"},             {"lr", "inf"},            {"lr", "1e40"},             {"lr", "1e-50"},
    {"lr", ""},                {"lr", "0.1x"},           {"lr", " 0.1"},             {"weight-decay", "-1e-4"},
    {"weight-decay", "x"},     {"weight-decay", "nan"},  {"momentum", "1"},          {"momentum", "-0.1"},
    {"momentum", "1.5"},       {"momentum", "m"},        {"schedule", "linear"},     {"milestones", "abc"},
    {"milestones", "3,2"},     {"milestones", "5,5"},    {"milestones", "0,10"},     {"milestones", "-1"},
    {"milestones", "1,,2"},    {"milestones", "1,2,"},   {"milestones", "1,2,3,4,5,6,7,8,9"},
    {"milestones", "1.5"},     {"batch-size", "0"},      {"batch-size", "65537"},    {"batch-size", "-1"},
    {"batch-size", "big"},     {"epochs", "0"},          {"epochs", "1000001"},      {"epochs", "1.5"},
    {"max-steps", "-1"},       {"max-steps", "many"},    {"eval-every", "0"},        {"eval-every", "-3"},
    {"eval-every", "epochs"},  {"eval-every", "2.5"},    {"early-stop", "never"},    {"patience", "0"},
    {"patience", "-2"},        {"patience", "p"},        {"bn-eval", "train"},       {"seed", "-3"},
    {"seed", "s"},             {"threads", "-1"},        {"threads", "1025"},        {"threads", "two"},
    {"checkpoint-every", "-1"}, {"checkpoint-every", "x"}, {"keep", "-1"},           {"keep", "k"},
    {"progress", "sometimes"}, {"data", ""},             {"checkpoint-dir", ""},
    {"timeout", "-1"},         {"timeout", "x"},         {"timeout", "nan"},         {"timeout", "1e9"},
    {"timeout", ""},           {"timeout", "5s"},
    {"ema", "1"},              {"ema", "-0.1"},          {"ema", "x"},               {"ema", "nan"},
    {"ema", "1.5"},            {"ema", ""},              {"ema", "0.9x"},            {"ema-warmup", "1"},
    {"ema-warmup", "yes"},     {"validate-raw", "1"},    {"validate-raw", ""},
};

START_TEST(bad_value_is_a_usage_error) {
    const Case *t = &bad_values[_i];
    char arg[128];
    snprintf(arg, sizeof arg, "--%s=%s", t->flag, t->value);
    Config c;
    ck_assert_msg(parse(&c, arg, NULL) == -1, "%s was accepted", arg);
    snprintf(arg, sizeof arg, "--%s", t->flag);
    assert_error_mentions(arg, t->value[0] ? t->value : NULL);
    /* the separate-word form gives the same verdict (values starting with "--" aside) */
    ck_assert_int_eq(parse(&c, arg, t->value, NULL), -1);
    assert_error_mentions(arg, NULL);
    /* and config_set, which the resume merge uses, rejects it too */
    config_defaults(&c);
    ck_assert_int_eq(config_set(&c, t->flag, t->value), -1);
}
END_TEST

static const Case eval_bench_bad_values[] = {
    {"split", "train"}, {"split", ""}, {"checkpoint", ""}, {"steps", "0"}, {"steps", "x"}, {"warmup", "-1"},
    {"weights", "average"}, {"weights", ""},
};

START_TEST(bad_eval_and_bench_values) {
    const Case *t = &eval_bench_bad_values[_i];
    const char *cmd = !strcmp(t->flag, "split") || !strcmp(t->flag, "checkpoint") || !strcmp(t->flag, "weights")
                          ? "eval" : "bench";
    char arg[128], flag[64];
    snprintf(arg, sizeof arg, "--%s=%s", t->flag, t->value);
    snprintf(flag, sizeof flag, "--%s", t->flag);
    Config c;
    ck_assert_msg(parse(&c, cmd, arg, NULL) == -1, "%s %s was accepted", cmd, arg);
    assert_error_mentions(flag, t->value[0] ? t->value : NULL);
}
END_TEST

START_TEST(good_values) {
    Config c;
    ck_assert_int_eq(parse(&c, "--dataset", "fashion-mnist", "--val-size", "1000", "--split-seed",
                           "18446744073709551615", "--limit-train", "4000", "--no-augment", "--arch", "paper",
                           "--depth", "110", "--optimizer", "adamw", "--lr", "2.5e-4", "--weight-decay", "0",
                           "--momentum", "0", "--schedule", "step", "--milestones", "100,200,300",
                           "--batch-size", "65536", "--epochs", "1000000", "--max-steps", "123456",
                           "--eval-every", "epoch", "--early-stop", "best", "--patience", "7", "--bn-eval",
                           "running", "--sync-bn", "--seed", "42", "--threads", "1024", "--checkpoint-dir",
                           "/tmp/ck", "--checkpoint-every", "500", "--keep", "3", "--resume", "auto",
                           "--metrics", "/tmp/m.jsonl", "--progress", "never", "--quiet", NULL),
                     0);
    ck_assert_str_eq(c.command, "train");
    ck_assert_str_eq(c.dataset, "fashion-mnist");
    ck_assert_int_eq(c.val_size, 1000);
    ck_assert_uint_eq(c.split_seed, UINT64_MAX);
    ck_assert_int_eq(c.limit_train, 4000);
    ck_assert_int_eq(c.augment, 0);
    ck_assert_int_eq(c.arch, ARCH_PAPER);
    ck_assert_int_eq(c.depth, 110);
    ck_assert_int_eq(c.optimizer, OPT_ADAMW);
    ck_assert_float_eq(c.lr, 2.5e-4f);
    ck_assert_float_eq(c.weight_decay, 0.0f);
    ck_assert_float_eq(c.momentum, 0.0f);
    ck_assert_int_eq(c.schedule, SCHED_STEP);
    ck_assert_int_eq(c.num_milestones, 3);
    ck_assert_int_eq(c.milestones[2], 300);
    ck_assert_int_eq(c.batch_size, 65536);
    ck_assert_int_eq(c.epochs, 1000000);
    ck_assert_int_eq(c.max_steps, 123456);
    ck_assert_int_eq(c.eval_every, 0);
    ck_assert_int_eq(c.early_stop, EARLY_STOP_BEST);
    ck_assert_int_eq(c.patience, 7);
    ck_assert_int_eq(c.bn_eval, BN_EVAL_RUNNING);
    ck_assert_int_eq(c.sync_bn, 1);
    ck_assert_uint_eq(c.seed, 42);
    ck_assert_int_eq(c.threads, 1024);
    ck_assert_str_eq(c.checkpoint_dir, "/tmp/ck");
    ck_assert_int_eq(c.checkpoint_every, 500);
    ck_assert_int_eq(c.keep, 3);
    ck_assert_str_eq(c.resume, "auto");
    ck_assert_str_eq(c.metrics, "/tmp/m.jsonl");
    ck_assert_int_eq(c.progress, PROGRESS_NEVER);
    ck_assert_int_eq(c.quiet, 1);
    ck_assert_int_eq(config_validate(&c), 0);
    /* every 6n+2 depth the model builds, not only the paper's five */
    ck_assert_int_eq(parse(&c, "--depth", "8", NULL), 0);
    ck_assert_int_eq(c.depth, 8);
    ck_assert_int_eq(parse(&c, "--depth", "1202", NULL), 0);
    ck_assert_int_eq(parse(&c, "--optimizer", "sgd", "--nesterov", "--progress", "always", NULL), 0);
    ck_assert_int_eq(c.nesterov, 1);
    ck_assert_int_eq(c.progress, PROGRESS_ALWAYS);
    ck_assert_int_eq(config_validate(&c), 0);
}
END_TEST

/* ---- the argv grammar ---- */

START_TEST(grammar_errors) {
    Config c;
    ck_assert_int_eq(parse(&c, "--foo", NULL), -1);
    assert_error_mentions("unknown option --foo", "--help");
    ck_assert_int_eq(parse(&c, "--lr=0.1", "--foo=3", NULL), -1);
    assert_error_mentions("--foo", NULL);
    ck_assert_msg(strstr(rn_last_error(), "=3") == NULL, "the unknown flag is named without its value");
    ck_assert_int_eq(parse(&c, "--lr", NULL), -1);
    assert_error_mentions("--lr", "missing value");
    ck_assert_int_eq(parse(&c, "--data", "--lr", "0.1", NULL), -1);
    assert_error_mentions("--data", "missing value");
    ck_assert_int_eq(parse(&c, "--lr", "0.1", "junk", NULL), -1);
    assert_error_mentions("junk", NULL);
    ck_assert_int_eq(parse(&c, "train", "eval", NULL), -1);
    assert_error_mentions("eval", NULL);
    ck_assert_int_eq(parse(&c, "fit", NULL), -1);
    assert_error_mentions("fit", NULL);
    ck_assert_int_eq(parse(&c, "-x", NULL), -1);
    assert_error_mentions("-x", NULL);
    ck_assert_int_eq(parse(&c, "--", NULL), -1);
    ck_assert_int_eq(parse(&c, "--nesterov=yes", NULL), -1);
    assert_error_mentions("--nesterov", "yes");
    /* a negative number is a value, not a flag */
    ck_assert_int_eq(parse(&c, "--lr", "-1", NULL), -1);
    assert_error_mentions("--lr", "-1");
    ck_assert_int_eq(parse(&c, "--no-augment", "1", NULL), -1);
    assert_error_mentions("'1'", NULL);
}
END_TEST

START_TEST(key_equals_value) {
    Config c;
    ck_assert_int_eq(parse(&c, "--lr=0.02", "--data=/d=x", "--milestones=10,20", "--no-augment=0", NULL), 0);
    ck_assert_float_eq(c.lr, 0.02f);
    ck_assert_str_eq(c.data_dir, "/d=x");
    ck_assert_int_eq(c.num_milestones, 2);
    ck_assert_int_eq(c.augment, 1);
    ck_assert_int_eq(parse(&c, "--quiet=1", "--sync-bn=0", NULL), 0);
    ck_assert_int_eq(c.quiet, 1);
    ck_assert_int_eq(c.sync_bn, 0);
    ck_assert_int_eq(parse(&c, "--metrics=", NULL), 0);
    ck_assert_str_eq(c.metrics, "");
}
END_TEST

START_TEST(subcommands) {
    Config c;
    ck_assert_int_eq(parse(&c, "train", "--epochs", "2", NULL), 0);
    ck_assert_str_eq(c.command, "train");
    ck_assert_int_eq(c.epochs, 2);
    ck_assert_int_eq(parse(&c, "eval", "--checkpoint", "ck/best.h5", "--split", "val", "--json", "--bn-eval",
                           "batch", "--data", "d", NULL),
                     0);
    ck_assert_str_eq(c.command, "eval");
    ck_assert_str_eq(c.checkpoint, "ck/best.h5");
    ck_assert_str_eq(c.split, "val");
    ck_assert_int_eq(c.json, 1);
    ck_assert_int_eq(config_validate(&c), 0);
    ck_assert_int_eq(parse(&c, "bench", "--arch", "paper", "--depth", "56", "--batch-size", "64", "--steps", "5",
                           "--warmup", "0", "--threads", "2", "--profile", NULL),
                     0);
    ck_assert_str_eq(c.command, "bench");
    ck_assert_int_eq(c.steps, 5);
    ck_assert_int_eq(c.warmup, 0);
    ck_assert_int_eq(c.profile, 1);
    ck_assert_int_eq(config_validate(&c), 0);
    /* options that belong to another subcommand */
    ck_assert_int_eq(parse(&c, "--checkpoint", "x.h5", NULL), -1);
    assert_error_mentions("--checkpoint", "eval");
    ck_assert_int_eq(parse(&c, "train", "--json", NULL), -1);
    assert_error_mentions("--json", NULL);
    ck_assert_int_eq(parse(&c, "--steps", "3", NULL), -1);
    assert_error_mentions("--steps", "bench");
    ck_assert_int_eq(parse(&c, "eval", "--checkpoint", "x", "--warmup", "3", NULL), -1);
    assert_error_mentions("--warmup", NULL);
    ck_assert_int_eq(parse(&c, "bench", "--split", "val", NULL), -1);
    assert_error_mentions("--split", NULL);
    /* the subcommand must come first */
    ck_assert_int_eq(parse(&c, "--lr", "0.1", "bench", NULL), -1);
}
END_TEST

START_TEST(help_and_version) {
    Config c;
    /* keep the test log short: the text itself is checked in usage_lists_every_flag */
    ck_assert_ptr_nonnull(freopen("/dev/null", "w", stdout));
    ck_assert_int_eq(parse(&c, "--help", NULL), 1);
    ck_assert_int_eq(parse(&c, "-h", NULL), 1);
    ck_assert_int_eq(parse(&c, "eval", "--help", NULL), 1);
    ck_assert_int_eq(parse(&c, "--lr", "bad", "--help", NULL), 1);
    ck_assert_int_eq(parse(&c, "--version", NULL), 1);
    ck_assert_int_eq(parse(&c, "bench", "--version", NULL), 1);
}
END_TEST

START_TEST(version_text) {
    char path[] = "/tmp/test_config_version.XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    close(fd);
    ck_assert_ptr_nonnull(freopen(path, "w", stdout));
    Config c;
    ck_assert_int_eq(parse(&c, "--version", NULL), 1);
    fflush(stdout);
    FILE *f = fopen(path, "r");
    char line[128] = "";
    ck_assert_ptr_nonnull(fgets(line, sizeof line, f));
    fclose(f);
    unlink(path);
    ck_assert_str_eq(line, "resnet_mpi " RESNET_VERSION "\n");
}
END_TEST

START_TEST(usage_lists_every_flag) {
    static const char *const flags[] = {
        "data", "dataset", "val-size", "split-seed", "limit-train", "no-augment", "recipe", "arch", "depth",
        "optimizer", "lr", "weight-decay", "momentum", "nesterov", "schedule", "milestones", "batch-size",
        "epochs", "max-steps", "eval-every", "early-stop", "patience", "bn-eval", "sync-bn", "seed", "threads",
        "timeout", "checkpoint-dir", "checkpoint-every", "keep", "resume", "overwrite", "metrics", "progress",
        "quiet", "checkpoint", "split", "json", "steps", "warmup", "profile", "help", "version", NULL};
    char *text = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&text, &size);
    config_usage(f);
    fclose(f);
    for (int i = 0; flags[i]; i++) {
        char flag[64];
        snprintf(flag, sizeof flag, "--%s ", flags[i]);
        int found = strstr(text, flag) != NULL;
        snprintf(flag, sizeof flag, "--%s\n", flags[i]);
        found = found || strstr(text, flag) != NULL;
        ck_assert_msg(found, "usage does not describe --%s", flags[i]);
    }
    ck_assert_ptr_nonnull(strstr(text, "RESNET_DATA"));
    ck_assert_ptr_nonnull(strstr(text, "75"));
    ck_assert_ptr_nonnull(strstr(text, "eval"));
    ck_assert_ptr_nonnull(strstr(text, "bench"));
    free(text);
    /* every documented flag is accepted by config_set (help and version aside) */
    for (int i = 0; flags[i]; i++) {
        if (!strcmp(flags[i], "help") || !strcmp(flags[i], "version")) continue;
        Config c;
        config_defaults(&c);
        int rc = config_set(&c, flags[i], "");
        ck_assert_msg(rc == 0 || strstr(rn_last_error(), "unknown option") == NULL, "config_set does not know %s",
                      flags[i]);
    }
}
END_TEST

/* the table that parsing, /config and --help come from agrees with itself (field sizes, defaults that
 * parse, the defaults --help states) */
START_TEST(settings_table_is_consistent) {
    ck_assert_msg(config_check_table() == 0, "%s", rn_last_error());
}
END_TEST

/* --timeout: seconds (fractions too), 0 for off, auto (the default) for the run's own pace; a launch
 * setting like --progress, so it is not among the settings a checkpoint keeps */
START_TEST(timeout_values) {
    Config c;
    config_defaults(&c);
    ck_assert(c.timeout < 0);
    ck_assert_int_eq(parse(&c, "--timeout", "2.5", NULL), 0);
    ck_assert(c.timeout == 2.5);
    ck_assert_int_eq(parse(&c, "--timeout=0", NULL), 0);
    ck_assert(c.timeout == 0);
    ck_assert_int_eq(parse(&c, "eval", "--timeout", "auto", "--checkpoint", "x.h5", NULL), 0);
    ck_assert(c.timeout < 0);
    ck_assert_int_eq(parse(&c, "bench", "--timeout", "600", NULL), 0);
    ck_assert(c.timeout == 600);
    Settings s;
    config_to_settings(&c, &s);
    ck_assert_ptr_null(settings_get(&s, "timeout"));
}
END_TEST

START_TEST(given_records_the_user_s_flags) {
    Config c;
    ck_assert_int_eq(parse(&c, "--lr", "1e-2", "--no-augment", "--recipe", "paper", "--quiet", NULL), 0);
    ck_assert_int_eq(c.given.count, 4);
    ck_assert_str_eq(settings_get(&c.given, "lr"), "1e-2");
    /* under the settings key, so that a resume does not re-enable augmentation from the file */
    ck_assert_str_eq(settings_get(&c.given, "augment"), "0");
    ck_assert_str_eq(settings_get(&c.given, "recipe"), "paper");
    ck_assert_str_eq(settings_get(&c.given, "quiet"), "1");
    ck_assert_ptr_null(settings_get(&c.given, "optimizer"));
    ck_assert_ptr_null(settings_get(&c.given, "data"));
}
END_TEST

/* ---- settings ---- */

START_TEST(settings_put_and_get) {
    Settings s = {0};
    ck_assert_ptr_null(settings_get(&s, "lr"));
    ck_assert_int_eq(settings_put(&s, "lr", "0.1"), 0);
    ck_assert_int_eq(settings_put(&s, "lr", "0.2"), 0);
    ck_assert_int_eq(s.count, 1);
    ck_assert_str_eq(settings_get(&s, "lr"), "0.2");
    char key[32];
    for (int i = 1; i < SETTINGS_MAX; i++) {
        snprintf(key, sizeof key, "k%d", i);
        ck_assert_int_eq(settings_put(&s, key, "v"), 0);
    }
    ck_assert_int_eq(settings_put(&s, "one-more", "v"), -1);
    ck_assert_int_eq(settings_put(&s, "k7", "replaced"), 0);   /* replacing still works when full */
    ck_assert_str_eq(settings_get(&s, "k7"), "replaced");
    char long_value[600];
    memset(long_value, 'a', sizeof long_value - 1);
    long_value[sizeof long_value - 1] = '\0';
    ck_assert_int_eq(settings_put(&s, "lr", long_value), -1);
    ck_assert_str_eq(settings_get(&s, "lr"), "0.2");
}
END_TEST

static const char *const training_keys[] = {
    "dataset", "data", "val-size", "split-seed", "limit-train", "augment", "recipe", "arch", "depth",
    "optimizer", "lr", "weight-decay", "momentum", "nesterov", "schedule", "milestones", "batch-size", "epochs",
    "max-steps", "eval-every", "early-stop", "patience", "bn-eval", "sync-bn", "seed", "threads",
    "checkpoint-dir", "checkpoint-every", "keep", "batch-per-rank", "lr-scaling", "base-batch", "warmup-steps",
    "warmup-epochs", "eval-protocol", "ema", "ema-warmup", "validate-raw", "bn-sample", NULL};

static void assert_same_settings(const Settings *a, const Settings *b) {
    ck_assert_int_eq(a->count, b->count);
    for (int i = 0; i < a->count; i++) {
        const char *v = settings_get(b, a->items[i].key);
        ck_assert_msg(v != NULL, "%s missing", a->items[i].key);
        ck_assert_msg(!strcmp(v, a->items[i].value), "%s: %s became %s", a->items[i].key, a->items[i].value, v);
    }
}

/* the training fields of two configs, bit for bit */
static void assert_same_training(const Config *a, const Config *b) {
    ck_assert_str_eq(a->dataset, b->dataset);
    ck_assert_str_eq(a->data_dir, b->data_dir);
    ck_assert_str_eq(a->recipe, b->recipe);
    ck_assert_str_eq(a->checkpoint_dir, b->checkpoint_dir);
    ck_assert_int_eq(a->val_size, b->val_size);
    ck_assert_uint_eq(a->split_seed, b->split_seed);
    ck_assert_int_eq(a->limit_train, b->limit_train);
    ck_assert_int_eq(a->augment, b->augment);
    ck_assert_int_eq(a->arch, b->arch);
    ck_assert_int_eq(a->depth, b->depth);
    ck_assert_int_eq(a->optimizer, b->optimizer);
    ck_assert_msg(memcmp(&a->lr, &b->lr, sizeof a->lr) == 0, "lr %.9g vs %.9g", (double)a->lr, (double)b->lr);
    ck_assert_msg(memcmp(&a->weight_decay, &b->weight_decay, sizeof(float)) == 0, "weight decay differs");
    ck_assert_msg(memcmp(&a->momentum, &b->momentum, sizeof(float)) == 0, "momentum differs");
    ck_assert_int_eq(a->nesterov, b->nesterov);
    ck_assert_int_eq(a->schedule, b->schedule);
    ck_assert_int_eq(a->num_milestones, b->num_milestones);
    for (int i = 0; i < SCHED_MAX_MILESTONES; i++) ck_assert_int_eq(a->milestones[i], b->milestones[i]);
    ck_assert_int_eq(a->batch_size, b->batch_size);
    ck_assert_int_eq(a->epochs, b->epochs);
    ck_assert_int_eq(a->max_steps, b->max_steps);
    ck_assert_int_eq(a->eval_every, b->eval_every);
    ck_assert_int_eq(a->early_stop, b->early_stop);
    ck_assert_int_eq(a->patience, b->patience);
    ck_assert_int_eq(a->bn_eval, b->bn_eval);
    ck_assert_int_eq(a->sync_bn, b->sync_bn);
    ck_assert_msg(memcmp(&a->ema, &b->ema, sizeof a->ema) == 0, "ema %.17g vs %.17g", a->ema, b->ema);
    ck_assert_int_eq(a->ema_warmup, b->ema_warmup);
    ck_assert_int_eq(a->validate_raw, b->validate_raw);
    ck_assert_uint_eq(a->seed, b->seed);
    ck_assert_int_eq(a->threads, b->threads);
    ck_assert_int_eq(a->checkpoint_every, b->checkpoint_every);
    ck_assert_int_eq(a->keep, b->keep);
}

/* replays settings onto a fresh config from the other recipe, forwards or backwards (a checkpoint may
 * keep its attributes in any order, e.g. sorted by name) */
static void round_trip(const Config *orig, int backwards) {
    Settings s, s2;
    config_to_settings(orig, &s);
    for (int k = 0; training_keys[k]; k++)
        ck_assert_msg(settings_get(&s, training_keys[k]) != NULL, "config_to_settings lacks %s", training_keys[k]);
    ck_assert_int_eq(s.count, (int)(sizeof training_keys / sizeof training_keys[0]) - 1);
    Config c;
    char *argv[] = {"resnet_mpi", "--recipe", strcmp(orig->recipe, "paper") ? "paper" : "seed", NULL};
    config_defaults(&c);
    ck_assert_int_eq(config_parse(&c, 3, argv), 0);
    for (int j = 0; j < s.count; j++) {
        const Setting *it = &s.items[backwards ? s.count - 1 - j : j];
        ck_assert_msg(config_set(&c, it->key, it->value) == 0, "%s = '%s': %s", it->key, it->value, rn_last_error());
        ck_assert_msg(strchr(it->value, '\n') == NULL && it->value[0], "%s has an odd value", it->key);
    }
    config_to_settings(&c, &s2);
    assert_same_settings(&s, &s2);
    assert_same_training(orig, &c);
}

START_TEST(settings_round_trip) {
    Config c;
    config_defaults(&c);
    round_trip(&c, 0);
    round_trip(&c, 1);
    ck_assert_int_eq(parse(&c, "--recipe", "paper", NULL), 0);
    round_trip(&c, 0);
    round_trip(&c, 1);
    Settings s;
    config_to_settings(&c, &s);
    ck_assert_str_eq(settings_get(&s, "milestones"), "32000,48000");
    ck_assert_str_eq(settings_get(&s, "eval-every"), "epoch");
    ck_assert_str_eq(settings_get(&s, "lr"), "0.1");   /* shortest exact spelling, not 0.100000001 */
    ck_assert_int_eq(parse(&c, "--dataset", "fashion-mnist", "--val-size", "1234", "--split-seed",
                           "18446744073709551615", "--limit-train", "777", "--no-augment", "--depth", "44",
                           "--optimizer", "adamw", "--lr", "0.0123456789", "--weight-decay", "3.3e-5",
                           "--momentum", "0.987654321", "--schedule", "cosine", "--milestones", "7,8,9,10,11,12,13,14",
                           "--batch-size", "333", "--epochs", "17", "--max-steps", "999", "--eval-every", "13",
                           "--early-stop", "best", "--patience", "9", "--sync-bn", "--seed", "12345678901234",
                           "--threads", "3", "--checkpoint-dir", "some dir/with spaces", "--checkpoint-every", "77",
                           "--keep", "2", NULL),
                     0);
    round_trip(&c, 0);
    round_trip(&c, 1);
    /* lr values that are not short decimals in float survive too */
    for (float lr = 1e-7f; lr < 10.0f; lr *= 1.37f) {
        c.lr = lr;
        c.weight_decay = lr / 3.0f;
        round_trip(&c, 0);
    }
    /* the empty milestone list reads back as empty */
    config_defaults(&c);
    config_to_settings(&c, &s);
    ck_assert_str_eq(settings_get(&s, "milestones"), "none");
    ck_assert_int_eq(config_set(&c, "milestones", "none"), 0);
    ck_assert_int_eq(c.num_milestones, 0);
    ck_assert_int_eq(config_set(&c, "milestones", "5"), 0);
    ck_assert_int_eq(config_set(&c, "milestones", ""), 0);
    ck_assert_int_eq(c.num_milestones, 0);
}
END_TEST

/* --ema DECAY: 0 is off (the seed recipe's), else 0 < DECAY < 1, kept as the double typed (PyTorch computes
 * 1 - DECAY from the Python float); a training setting saved in /config, refused by eval, which has
 * --weights instead. */
START_TEST(ema_values) {
    Config c;
    config_defaults(&c);
    ck_assert(c.ema == 0.999);
    ck_assert_str_eq(c.weights, "");
    ck_assert_int_eq(parse(&c, "--ema", "0.999", NULL), 0);
    ck_assert(c.ema == 0.999);
    ck_assert_int_eq(parse(&c, "--ema=0", NULL), 0);
    ck_assert(c.ema == 0);
    ck_assert_int_eq(parse(&c, "--ema", "1e-3", NULL), 0);
    ck_assert(c.ema == 1e-3);
    ck_assert_int_eq(parse(&c, "--ema", "0.9999", "--ema-warmup", "off", "--validate-raw", "on", NULL), 0);
    ck_assert_int_eq(c.ema_warmup, 0);
    ck_assert_int_eq(c.validate_raw, 1);
    Settings s;
    config_to_settings(&c, &s);
    ck_assert_str_eq(settings_get(&s, "ema"), "0.9999");
    ck_assert_str_eq(settings_get(&s, "ema-warmup"), "off");
    ck_assert_str_eq(settings_get(&s, "validate-raw"), "on");
    round_trip(&c, 0);
    ck_assert_int_eq(parse(&c, "--ema", "1", NULL), -1);
    assert_error_mentions("--ema", "'1'");
    ck_assert_int_eq(parse(&c, "eval", "--checkpoint", "x.h5", "--ema", "0.9", NULL), -1);
    assert_error_mentions("--ema is an option of train", NULL);
    ck_assert_int_eq(parse(&c, "eval", "--checkpoint", "x.h5", "--weights", "ema", NULL), 0);
    ck_assert_str_eq(c.weights, "ema");
    ck_assert_int_eq(parse(&c, "eval", "--checkpoint", "x.h5", "--weights=raw", NULL), 0);
    ck_assert_str_eq(c.weights, "raw");
    ck_assert_int_eq(parse(&c, "--weights", "ema", NULL), -1);
    assert_error_mentions("--weights is an option of eval", NULL);
}
END_TEST

/* A checkpoint written before a recipe setting existed lacks its key: a resume or eval takes the value of
 * the file's recipe (seed for files without one), not today's default, unless the user gives it. */
START_TEST(missing_recipe_settings_take_the_file_s_recipe) {
    Config c;
    Settings file = {0};
    ck_assert_int_eq(settings_put(&file, "lr", "0.002"), 0);
    ck_assert_int_eq(parse(&c, NULL), 0);
    config_fill_missing(&c, &file);   /* no recipe in the file: the seed's */
    ck_assert(c.ema == 0);
    ck_assert_int_eq(c.bn_eval, BN_EVAL_BATCH);
    ck_assert_float_eq(c.lr, 1e-3f);   /* a key the file has is the merge's to set, not this */
    ck_assert_int_eq(settings_put(&file, "recipe", "tuned"), 0);
    ck_assert_int_eq(parse(&c, NULL), 0);
    c.ema = 0;   /* as a replayed setting could have left it */
    c.bn_eval = BN_EVAL_BATCH;
    c.validate_raw = 1;
    config_fill_missing(&c, &file);
    ck_assert(c.ema == 0.999);
    ck_assert_int_eq(c.bn_eval, BN_EVAL_REFERENCE);
    ck_assert_int_eq(c.validate_raw, 0);
    ck_assert_int_eq(settings_put(&file, "recipe", "paper"), 0);
    ck_assert_int_eq(settings_put(&file, "bn-eval", "batch"), 0);
    ck_assert_int_eq(parse(&c, "--ema", "0.99", NULL), 0);
    config_fill_missing(&c, &file);
    ck_assert(c.ema == 0.99);                       /* given */
    ck_assert_int_eq(c.ema_warmup, 0);               /* missing: the paper's */
    ck_assert_int_eq(c.validate_raw, 1);             /* missing: the paper's */
    ck_assert_int_eq(c.bn_eval, BN_EVAL_REFERENCE);  /* in the file: left to the merge */
    ck_assert_int_eq(c.max_steps, 64000);           /* missing: the paper's */
    ck_assert_int_eq(parse(&c, "--recipe", "seed", NULL), 0);
    config_fill_missing(&c, &file);                 /* a recipe given beats the file's */
    ck_assert_int_eq(c.max_steps, 0);
}
END_TEST

START_TEST(config_set_is_only_one_value) {
    /* a recipe name replayed from a checkpoint must not reset values restored before it */
    Config c;
    config_defaults(&c);
    ck_assert_int_eq(config_set(&c, "lr", "0.5"), 0);
    ck_assert_int_eq(config_set(&c, "recipe", "paper"), 0);
    ck_assert_str_eq(c.recipe, "paper");
    ck_assert_float_eq(c.lr, 0.5f);
    ck_assert_int_eq(c.arch, ARCH_SEED);
    ck_assert_int_eq(config_set(&c, "augment", "0"), 0);
    ck_assert_int_eq(c.augment, 0);
    ck_assert_int_eq(config_set(&c, "no-augment", "0"), 0);
    ck_assert_int_eq(c.augment, 1);
    ck_assert_int_eq(config_set(&c, "world-size", "4"), -1);
    assert_error_mentions("world-size", NULL);
    ck_assert_int_eq(config_set(&c, "eval-every", "epoch"), 0);
    ck_assert_int_eq(c.eval_every, 0);
    ck_assert_int_eq(c.given.count, 0);
}
END_TEST

/* ---- cross-checks ---- */

START_TEST(scale_out_settings) {
    Config c;
    ck_assert_int_eq(parse(&c, "--batch-size", "256", "--batch-per-rank", "64", NULL), 0);
    ck_assert_int_eq(config_validate(&c), -1);
    assert_error_mentions("--batch-size", "--batch-per-rank");
    ck_assert_int_eq(parse(&c, "--warmup-steps", "5", "--warmup-epochs", "1", NULL), 0);
    ck_assert_int_eq(config_validate(&c), -1);
    assert_error_mentions("--warmup-steps", "--warmup-epochs");
    ck_assert_int_eq(parse(&c, "--lr-scaling", "cubic", NULL), -1);
    assert_error_mentions("--lr-scaling", NULL);

    /* the factor at the global batch against --base-batch */
    ck_assert_int_eq(parse(&c, "--batch-size", "1024", NULL), 0);
    ck_assert_double_eq(config_lr_factor(&c), 1.0);
    ck_assert_int_eq(parse(&c, "--batch-size", "1024", "--lr-scaling", "linear", NULL), 0);
    ck_assert_double_eq_tol(config_lr_factor(&c), 8.0, 1e-12);
    ck_assert_int_eq(parse(&c, "--batch-size", "1024", "--lr-scaling", "sqrt", NULL), 0);
    ck_assert_double_eq_tol(config_lr_factor(&c), sqrt(8.0), 1e-12);
    ck_assert_int_eq(parse(&c, "--batch-size", "512", "--lr-scaling", "sqrt", "--base-batch", "512", NULL), 0);
    ck_assert_double_eq_tol(config_lr_factor(&c), 1.0, 1e-12);
    Schedule s;
    ck_assert_int_eq(parse(&c, "--batch-size", "512", "--lr-scaling", "linear", "--lr", "0.001", NULL), 0);
    config_schedule(&c, 88, &s);
    ck_assert_double_eq_tol(s.base_lr, 0.004, 1e-9);

    /* warmup in epochs rounds up to whole steps; an exact multiple stays exact */
    ck_assert_int_eq(parse(&c, "--warmup-epochs", "0.5", NULL), 0);
    ck_assert_int_eq(config_warmup_steps(&c, 351), 176);
    ck_assert_int_eq(parse(&c, "--warmup-epochs", "2", NULL), 0);
    ck_assert_int_eq(config_warmup_steps(&c, 351), 702);
    ck_assert_int_eq(parse(&c, "--warmup-steps", "40", NULL), 0);
    config_schedule(&c, 351, &s);
    ck_assert_int_eq(s.warmup_steps, 40);
}
END_TEST

START_TEST(validate_cross_checks) {
    Config c;
    ck_assert_int_eq(parse(&c, "--bn-eval", "running", NULL), 0);
    ck_assert_int_eq(config_validate(&c), -1);
    assert_error_mentions("--bn-eval running", "--arch paper");
    ck_assert_int_eq(parse(&c, "--recipe", "paper", "--arch", "seed", NULL), 0);
    ck_assert_int_eq(config_validate(&c), -1);
    assert_error_mentions("--bn-eval running", NULL);
    ck_assert_int_eq(parse(&c, "--arch", "paper", "--bn-eval", "running", NULL), 0);
    ck_assert_int_eq(config_validate(&c), 0);

    ck_assert_int_eq(parse(&c, "eval", NULL), 0);
    ck_assert_int_eq(config_validate(&c), -1);
    assert_error_mentions("--checkpoint", NULL);

    ck_assert_int_eq(parse(&c, "--nesterov", NULL), 0);   /* Adam by default */
    ck_assert_int_eq(config_validate(&c), -1);
    assert_error_mentions("--nesterov", "sgd");
    ck_assert_int_eq(parse(&c, "--nesterov", "--optimizer", "sgd", "--momentum", "0", NULL), 0);
    ck_assert_int_eq(config_validate(&c), -1);
    assert_error_mentions("--nesterov", "--momentum");
    ck_assert_int_eq(parse(&c, "--recipe", "paper", "--nesterov", NULL), 0);
    ck_assert_int_eq(config_validate(&c), 0);

    ck_assert_int_eq(parse(&c, "--schedule", "step", NULL), 0);
    ck_assert_int_eq(config_validate(&c), -1);
    assert_error_mentions("--milestones", NULL);
    ck_assert_int_eq(parse(&c, "--schedule", "step", "--milestones", "100", NULL), 0);
    ck_assert_int_eq(config_validate(&c), 0);
    ck_assert_int_eq(parse(&c, "--recipe", "paper", "--milestones", "none", NULL), 0);
    ck_assert_int_eq(config_validate(&c), -1);
}
END_TEST

/* ---- what the other modules receive ---- */

START_TEST(derived_configs) {
    Config c;
    ck_assert_int_eq(parse(&c, "--recipe", "paper", "--depth", "32", "--nesterov", NULL), 0);
    ModelConfig mc = config_model(&c, 1, 28, 10);
    ck_assert_int_eq(mc.arch, ARCH_PAPER);
    ck_assert_int_eq(mc.depth, 32);
    ck_assert_int_eq(mc.in_channels, 1);
    ck_assert_int_eq(mc.image_size, 28);
    ck_assert_int_eq(mc.classes, 10);

    OptimConfig oc;
    config_optim(&c, &oc);
    ck_assert_int_eq(oc.kind, OPT_SGD);
    ck_assert_float_eq(oc.lr, 0.1f);
    ck_assert_float_eq(oc.weight_decay, 1e-4f);
    ck_assert_float_eq(oc.momentum, 0.9f);
    ck_assert_int_eq(oc.nesterov, 1);
    ck_assert_float_eq(oc.beta1, 0.9f);
    ck_assert_float_eq(oc.beta2, 0.999f);
    ck_assert_float_eq(oc.eps, 1e-8f);

    Schedule s;
    config_schedule(&c, 352, &s);
    ck_assert_int_eq(s.kind, SCHED_STEP);
    ck_assert_float_eq(s.base_lr, 0.1f);
    ck_assert_int_eq(s.total_steps, 64000);   /* max-steps, not epochs x steps */
    ck_assert_int_eq(s.num_milestones, 2);
    ck_assert_int_eq(s.milestones[0], 32000);
    ck_assert_int_eq(s.milestones[1], 48000);
    ck_assert_float_eq(s.gamma, 0.1f);

    /* a cosine over fewer epochs than max-steps allows ends with the run */
    ck_assert_int_eq(parse(&c, "--recipe", "paper", "--schedule", "cosine", "--epochs", "10", NULL), 0);
    config_schedule(&c, 352, &s);
    ck_assert_int_eq(s.kind, SCHED_COSINE);
    ck_assert_int_eq(s.total_steps, 3520);
    ck_assert_int_eq(s.num_milestones, 0);

    ck_assert_int_eq(parse(&c, "--schedule", "cosine", "--lr", "0.01", NULL), 0);
    config_schedule(&c, 352, &s);
    ck_assert_int_eq(s.total_steps, 50 * 352);
    ck_assert_float_eq(s.base_lr, 0.01f);
    config_optim(&c, &oc);
    ck_assert_int_eq(oc.kind, OPT_ADAM);
    ck_assert_int_eq(oc.nesterov, 0);
}
END_TEST

Suite *test_suite(void) {
    Suite *s = suite_create("config");
    TCase *t = tcase_create("recipes");
    tcase_add_checked_fixture(t, setup, NULL);
    tcase_add_test(t, defaults_are_the_tuned_recipe);
    tcase_add_test(t, missing_recipe_settings_take_the_file_s_recipe);
    tcase_add_test(t, data_dir_defaults);
    tcase_add_test(t, paper_recipe);
    tcase_add_test(t, flags_override_the_recipe_in_any_order);
    suite_add_tcase(s, t);

    TCase *v = tcase_create("values");
    tcase_add_checked_fixture(v, setup, NULL);
    tcase_add_loop_test(v, bad_value_is_a_usage_error, 0, (int)(sizeof bad_values / sizeof bad_values[0]));
    tcase_add_loop_test(v, bad_eval_and_bench_values, 0,
                        (int)(sizeof eval_bench_bad_values / sizeof eval_bench_bad_values[0]));
    tcase_add_test(v, good_values);
    suite_add_tcase(s, v);

    TCase *g = tcase_create("grammar");
    tcase_add_checked_fixture(g, setup, NULL);
    tcase_add_test(g, grammar_errors);
    tcase_add_test(g, key_equals_value);
    tcase_add_test(g, subcommands);
    tcase_add_test(g, help_and_version);
    tcase_add_test(g, version_text);
    tcase_add_test(g, usage_lists_every_flag);
    tcase_add_test(g, settings_table_is_consistent);
    tcase_add_test(g, given_records_the_user_s_flags);
    tcase_add_test(g, timeout_values);
    suite_add_tcase(s, g);

    TCase *r = tcase_create("settings");
    tcase_add_checked_fixture(r, setup, NULL);
    tcase_add_test(r, settings_put_and_get);
    tcase_add_test(r, settings_round_trip);
    tcase_add_test(r, ema_values);
    tcase_add_test(r, config_set_is_only_one_value);
    tcase_add_test(r, validate_cross_checks);
    tcase_add_test(r, scale_out_settings);
    tcase_add_test(r, derived_configs);
    suite_add_tcase(s, r);
    return s;
}
