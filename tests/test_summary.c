/* `resnet_mpi summary` built from the model's layer list and parameter table: every parameter tensor
 * belongs to exactly one listed module, the unique count is the table's, and torchsummary's repeated
 * count exceeds it by exactly the seed's shared BatchNorms. The seed notebook's own printout (272,490
 * listed, 5.16 MB pass size) is the reference for ResNet-20. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "check_main.h"
#include "resnet/resnet.h"
#include "resnet/summary.h"

static Model build(Arch arch, int depth, int channels, int size) {
    Model m;
    ModelConfig mc = {.arch = arch, .depth = depth, .in_channels = channels, .image_size = size, .classes = 10};
    ck_assert_int_eq(model_init(&m, &mc, 1), 0);
    return m;
}

/* tensors of the table named "<module>.<leaf>" */
static size_t module_params(const Model *m, const char *module, int *tensors) {
    const size_t len = strlen(module);
    size_t total = 0;
    *tensors = 0;
    for (int i = 0; i < m->num_param_tensors; i++) {
        const char *name = m->param_info[i].name;
        if (!strncmp(name, module, len) && name[len] == '.' && !strchr(name + len + 1, '.')) {
            total += m->param_info[i].numel;
            (*tensors)++;
        }
    }
    return total;
}

/* listed: torchsummary's sum over rows; unique: over distinct modules; covered: tensors reached */
static void totals(const Model *m, size_t *listed, size_t *unique, int *covered) {
    const int count = model_layers(m, NULL, 0);
    ModelLayer *rows = calloc((size_t)count, sizeof *rows);
    ck_assert_int_eq(model_layers(m, rows, count), count);
    *listed = *unique = 0;
    *covered = 0;
    for (int i = 0; i < count; i++) {
        int tensors, seen = 0;
        const size_t p = module_params(m, rows[i].module, &tensors);
        for (int j = 0; j < i; j++) seen |= !strcmp(rows[j].module, rows[i].module);
        *listed += p;
        if (!seen) {
            *unique += p;
            *covered += tensors;
        }
    }
    free(rows);
}

START_TEST(every_tensor_once_and_seed_bn_counted_twice) {
    const int depths[] = {20, 32, 56};
    for (int a = 0; a < 2; a++)
        for (int d = 0; d < 3; d++)
            for (int mnist = 0; mnist < 2; mnist++) {
                Model m = build(a ? ARCH_PAPER : ARCH_SEED, depths[d], mnist ? 1 : 3, mnist ? 28 : 32);
                size_t listed, unique;
                int covered;
                totals(&m, &listed, &unique, &covered);
                ck_assert_int_eq(covered, m.num_param_tensors);
                ck_assert_uint_eq(unique, m.num_params);
                ck_assert_uint_eq(unique, model_count_params(&m.cfg));
                /* each seed block applies its one BN (weight + bias of cout channels) twice */
                const size_t blocks_per_stage = (size_t)(depths[d] - 2) / 6;
                ck_assert_uint_eq(listed - unique, a ? 0 : blocks_per_stage * 2 * (16 + 32 + 64));
                model_free(&m);
            }
}
END_TEST

START_TEST(output_shapes_follow_the_stages) {
    Model m = build(ARCH_SEED, 20, 3, 32);
    ModelLayer rows[128];
    const int n = model_layers(&m, rows, 128);
    ck_assert_int_eq(n, 72);   /* the seed notebook lists 72 rows */
    ck_assert_str_eq(rows[0].type, "Conv2d");
    ck_assert_int_eq(rows[0].channels, 16);
    ck_assert_str_eq(rows[24].module, "module2.0.downsample.0");   /* Conv2d-25 [-1, 32, 16, 16] 512 */
    ck_assert_int_eq(rows[24].channels, 32);
    ck_assert_int_eq(rows[24].height, 16);
    ck_assert_str_eq(rows[69].type, "block");
    ck_assert_int_eq(rows[69].height, 8);
    ck_assert_str_eq(rows[70].type, "AvgPool2d");
    ck_assert_int_eq(rows[70].height, 1);
    ck_assert_str_eq(rows[71].type, "Linear");
    ck_assert_int_eq(rows[71].height, 0);
    model_free(&m);
}
END_TEST

static char *printed(const Model *m) {
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    ck_assert_int_eq(summary_print(f, m), 0);
    fclose(f);
    return text;
}

START_TEST(seed_totals_match_the_notebook) {
    Model m = build(ARCH_SEED, 20, 3, 32);
    char *text = printed(&m);
    ck_assert_ptr_nonnull(strstr(text, "Total params: 272,490\n"));
    ck_assert_ptr_nonnull(strstr(text, "Unique params: 271,818 "));
    ck_assert_ptr_nonnull(strstr(text, "Forward/backward pass size (MB): 5.16\n"));
    ck_assert_ptr_nonnull(strstr(text, "Params size (MB): 1.04\n"));
    ck_assert_ptr_nonnull(strstr(text, "Estimated Total Size (MB): 6.21\n"));
    ck_assert_ptr_nonnull(strstr(text, "      BatchNorm2d-26           [-1, 32, 16, 16]              64"));
    free(text);
    model_free(&m);
    m = build(ARCH_PAPER, 20, 3, 32);
    text = printed(&m);
    ck_assert_ptr_nonnull(strstr(text, "Total params: 269,722\n"));
    ck_assert_ptr_nonnull(strstr(text, "Unique params: 269,722 "));
    free(text);
    model_free(&m);
}
END_TEST

Suite *test_suite(void) {
    Suite *s = suite_create("summary");
    TCase *tc = tcase_create("summary");
    tcase_add_test(tc, every_tensor_once_and_seed_bn_counted_twice);
    tcase_add_test(tc, output_shapes_follow_the_stages);
    tcase_add_test(tc, seed_totals_match_the_notebook);
    suite_add_tcase(s, tc);
    return s;
}
