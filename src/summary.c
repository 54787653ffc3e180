/* `resnet_mpi summary`: the model as the seed's notebook shows it with torchsummary (layer, output
 * shape, parameters), built from the model's own layer list and parameter table, so that the summary
 * cannot disagree with what is trained. torchsummary adds up the parameters of every module call, so
 * a module called twice (the seed's one BatchNorm per block) is counted twice; the unique count is what
 * the parameter table, the checkpoint and the optimizer hold. Both are printed, with the difference
 * explained. */
#include "resnet/summary.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "resnet/config.h"
#include "resnet/dist.h"
#include "resnet/run.h"
#include "resnet/util.h"

/* Parameters of a row: the table's tensors "<module>.<leaf>" (weight, bias), as torchsummary counts the
 * module's own weight and bias, not its children's. */
static size_t row_params(const Model *m, const ModelLayer *row) {
    const size_t len = strlen(row->module);
    size_t total = 0;
    for (int i = 0; i < m->num_param_tensors; i++) {
        const char *name = m->param_info[i].name;
        if (strncmp(name, row->module, len) == 0 && name[len] == '.' && !strchr(name + len + 1, '.'))
            total += m->param_info[i].numel;
    }
    return total;
}

/* 272490 -> "272,490", as Python's "{:,}" */
static const char *with_commas(char *buf, size_t size, size_t value) {
    char digits[32];
    const int n = snprintf(digits, sizeof digits, "%zu", value);
    size_t j = 0;
    for (int i = 0; i < n && j + 2 < size; i++) {
        if (i > 0 && (n - i) % 3 == 0) buf[j++] = ',';
        buf[j++] = digits[i];
    }
    buf[j] = '\0';
    return buf;
}

static void shape_text(char *buf, size_t size, const ModelLayer *row) {
    if (row->height > 0) snprintf(buf, size, "[-1, %d, %d, %d]", row->channels, row->height, row->width);
    else snprintf(buf, size, "[-1, %d]", row->channels);
}

static int first_use(const ModelLayer *rows, int i) {
    for (int j = 0; j < i; j++)
        if (strcmp(rows[j].module, rows[i].module) == 0) return 0;
    return 1;
}

/* torchsummary's closing lines: its sizes count every module output twice (forward and gradient) at
 * 4 bytes, and the parameters at its own (repeated) total. */
static void print_totals(FILE *out, const Model *m, size_t listed, size_t unique, size_t repeated_modules,
                         double output_floats) {
    char a[32], b[32], c[32];
    fprintf(out, "Total params: %s\n", with_commas(a, sizeof a, listed));
    fprintf(out, "Trainable params: %s\n", a);
    fprintf(out, "Non-trainable params: 0\n");
    fprintf(out, "Unique params: %s (the parameter table: what the checkpoint holds and the optimizer updates)\n",
            with_commas(b, sizeof b, unique));
    if (listed != unique)
        fprintf(out, "  torchsummary counts the parameters of every call of a module: %zu module(s) called twice\n"
                     "  (each seed block's one BatchNorm, applied after conv1 and again after the shortcut sum)\n"
                     "  add %s parameters that exist once.\n",
                repeated_modules, with_commas(c, sizeof c, listed - unique));
    if (m->num_buffer_floats)
        fprintf(out, "BN running statistics (buffers, not parameters): %s floats\n",
                with_commas(c, sizeof c, m->num_buffer_floats));
    const double mib = 1024.0 * 1024.0, pixels = (double)m->cfg.in_channels * m->cfg.image_size * m->cfg.image_size;
    const double input = pixels * 4 / mib, pass = 2.0 * output_floats * 4 / mib, params = (double)listed * 4 / mib;
    fprintf(out, "----------------------------------------------------------------\n");
    fprintf(out, "Input size (MB): %.2f\n", input);
    fprintf(out, "Forward/backward pass size (MB): %.2f\n", pass);
    fprintf(out, "Params size (MB): %.2f\n", params);
    fprintf(out, "Estimated Total Size (MB): %.2f\n", input + pass + params);
    fprintf(out, "----------------------------------------------------------------\n");
}

int summary_print(FILE *out, const Model *m) {
    const int count = model_layers(m, NULL, 0);
    ModelLayer *rows = calloc((size_t)count, sizeof *rows);
    if (!rows) return rn_error("out of memory listing the layers");
    model_layers(m, rows, count);
    fprintf(out, "------------------------------------------------------------------------------------\n");
    fprintf(out, "%20s  %25s %15s   %s\n", "Layer (type)", "Output Shape", "Param #", "Parameters of");
    fprintf(out, "====================================================================================\n");
    size_t listed = 0, unique = 0, repeated = 0;
    double output_floats = 0;
    for (int i = 0; i < count; i++) {
        const ModelLayer *row = &rows[i];
        const size_t params = row_params(m, row);
        char label[48], shape[48], num[32];
        snprintf(label, sizeof label, "%s-%d", row->type, i + 1);
        shape_text(shape, sizeof shape, row);
        fprintf(out, "%20s  %25s %15s   %s\n", label, shape, with_commas(num, sizeof num, params),
                params ? row->module : "");
        listed += params;
        if (first_use(rows, i)) unique += params;
        else if (params) repeated++;
        output_floats += (double)row->channels * (row->height > 0 ? row->height * row->width : 1);
    }
    fprintf(out, "====================================================================================\n");
    free(rows);
    if (unique != m->num_params)
        return rn_error("the layer list covers %zu parameters but the parameter table holds %zu", unique,
                        m->num_params);
    print_totals(out, m, listed, unique, repeated, output_floats);
    return 0;
}

static void summary_usage(FILE *out) {
    fputs("usage: resnet_mpi summary [--arch seed|paper] [--depth N] [--image-size N] [--in-channels N]\n"
          "                          [--classes N] [--dataset cifar10|fashion-mnist]\n"
          "The model as a table of layers, output shapes and parameters (torchsummary's form), with\n"
          "torchsummary's total and the unique parameter count. Defaults: seed, 20, 32, 3, 10;\n"
          "--dataset fashion-mnist means --in-channels 1 --image-size 28.\n",
          out);
}

/* An integer flag whose value the model must accept: checked by counting the parameters of the model
 * with that value, so the ranges live in resnet.c only. */
static int set_int(ModelConfig *mc, const char *flag, const char *value) {
    char *end;
    errno = 0;
    const long v = strtol(value, &end, 10);
    if (errno || end == value || *end || v < -100000 || v > 100000)
        return rn_error("--%s '%s': not an integer", flag, value);
    ModelConfig trial = *mc;
    if (!strcmp(flag, "depth")) trial.depth = (int)v;
    else if (!strcmp(flag, "image-size")) trial.image_size = (int)v;
    else if (!strcmp(flag, "in-channels")) trial.in_channels = (int)v;
    else trial.classes = (int)v;
    if (model_count_params(&trial) == 0) {
        char why[512];
        snprintf(why, sizeof why, "%s", rn_last_error());
        return rn_error("--%s %s: %s", flag, value, why);
    }
    *mc = trial;
    return 0;
}

/* 0 ok, 1 help printed, -1 usage error (rn_error). Architecture names are config.c's. */
static int parse_summary(int argc, char **argv, ModelConfig *mc) {
    static const char *const flags[] = {"arch", "depth", "image-size", "in-channels", "classes", "dataset", NULL};
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return 1;
        const char *arg = argv[i];
        if (strncmp(arg, "--", 2) != 0) return rn_error("summary: unexpected argument '%s'; see resnet_mpi summary --help", arg);
        const char *name = arg + 2, *eq = strchr(name, '=');
        const size_t len = eq ? (size_t)(eq - name) : strlen(name);
        int known = -1;
        for (int f = 0; flags[f]; f++)
            if (strlen(flags[f]) == len && !strncmp(flags[f], name, len)) known = f;
        if (known < 0) return rn_error("summary: unknown option --%.*s; see resnet_mpi summary --help", (int)len, name);
        const char *flag = flags[known], *value = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
        if (!value) return rn_error("--%s: missing value", flag);
        if (!strcmp(flag, "arch") || !strcmp(flag, "dataset")) {
            Config c;
            config_defaults(&c);
            if (config_set(&c, flag, value)) return -1;
            const int mnist = !strcmp(c.dataset, "fashion-mnist");
            if (!strcmp(flag, "arch")) {
                mc->arch = c.arch;
            } else {
                mc->in_channels = mnist ? 1 : 3;
                mc->image_size = mnist ? 28 : 32;
            }
        } else if (set_int(mc, flag, value)) {
            return -1;
        }
    }
    return 0;
}

int summary_main(int argc, char **argv) {
    const int rank0 = dist_rank() == 0;
    ModelConfig mc = {.arch = ARCH_SEED, .depth = 20, .in_channels = 3, .image_size = 32, .classes = 10};
    const int parsed = parse_summary(argc, argv, &mc);
    if (parsed != 0) {
        if (parsed > 0) summary_usage(stdout);
        else if (rank0) rn_message("%s", rn_last_error());
        return parsed > 0 ? EXIT_OK : EXIT_USAGE;
    }
    Model m;
    if (model_init(&m, &mc, 0)) {
        if (rank0) rn_message("%s", rn_last_error());
        return EXIT_FAILED;
    }
    printf("%s ResNet-%d, input %dx%dx%d, %d classes\n", mc.arch == ARCH_SEED ? "seed" : "paper", mc.depth,
           mc.in_channels, mc.image_size, mc.image_size, mc.classes);
    const int rc = summary_print(stdout, &m);
    if (rc && rank0) rn_message("%s", rn_last_error());
    model_free(&m);
    return rc ? EXIT_FAILED : EXIT_OK;
}
