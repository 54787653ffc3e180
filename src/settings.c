/* The key/value list of settings: see settings.h. */
#include "resnet/settings.h"

#include <stdio.h>
#include <string.h>

#include "resnet/util.h"

const char *settings_get(const Settings *s, const char *key) {
    for (int i = 0; i < s->count; i++)
        if (strcmp(s->items[i].key, key) == 0) return s->items[i].value;
    return NULL;
}

int settings_put(Settings *s, const char *key, const char *value) {
    /* a truncated key or value would silently become another setting: refuse instead */
    if (strlen(key) >= sizeof s->items[0].key) return rn_error("setting name '%s' is too long", key);
    if (strlen(value) >= sizeof s->items[0].value)
        return rn_error("value of setting %s is longer than %zu characters", key, sizeof s->items[0].value - 1);
    int i = 0;
    while (i < s->count && strcmp(s->items[i].key, key) != 0) i++;
    if (i == s->count) {
        if (s->count >= SETTINGS_MAX) return rn_error("more than %d settings", SETTINGS_MAX);
        s->count++;
        snprintf(s->items[i].key, sizeof s->items[i].key, "%s", key);
    }
    snprintf(s->items[i].value, sizeof s->items[i].value, "%s", value);
    return 0;
}
