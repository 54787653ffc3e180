/* Settings as key/value strings: how a run's configuration travels between the command line, the
 * checkpoint's /config attributes and the resume merge. The keys and what a value may be are the
 * settings table's (config.c); this is only the list. */
#ifndef RESNET_SETTINGS_H
#define RESNET_SETTINGS_H

#define SETTINGS_MAX 96
typedef struct { char key[32]; char value[512]; } Setting;
typedef struct { int count; Setting items[SETTINGS_MAX]; } Settings;

const char *settings_get(const Settings *s, const char *key);   /* NULL when absent */
int settings_put(Settings *s, const char *key, const char *value); /* add or replace; -1 when full */

#endif
