/*
 * A Docker action in C for the actionproxy blackbox image, after OpenWhisk's sdk/docker
 * example: one process per activation, the JSON of `value` as argv[1] (and on stdin).
 *
 * Every line written before the last one on stdout is a log line, and so is everything on
 * stderr; the last stdout line is the result and must be a JSON object (or array).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The value is not in argv[1] when its JSON is longer than one argument may be (128 KiB):
 * then it is only on stdin, as in OpenWhisk's dockerskeleton. */
static char *read_all(FILE *in) {
    size_t size = 0, cap = 4096;
    char *buf = malloc(cap);
    if (buf == NULL) return NULL;
    for (;;) {
        size_t got = fread(buf + size, 1, cap - size - 1, in);
        size += got;
        if (got == 0) break;
        if (size + 1 == cap) {
            char *bigger = realloc(buf, cap *= 2);
            if (bigger == NULL) { free(buf); return NULL; }
            buf = bigger;
        }
    }
    while (size > 0 && (buf[size - 1] == '\n' || buf[size - 1] == '\r' || buf[size - 1] == ' '))
        size--;
    buf[size] = '\0';
    return buf;
}

/* A string as a JSON string literal (for the activation id, which is not our JSON). */
static void put_json_string(const char *s) {
    putchar('"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') printf("\\%c", c);
        else if (c < 0x20) printf("\\u%04x", c);
        else putchar(c);
    }
    putchar('"');
}

int main(int argc, char **argv) {
    const char *args = argc > 1 ? argv[1] : read_all(stdin);
    if (args == NULL || *args == '\0') args = "{}";
    const char *activation = getenv("__OW_ACTIVATION_ID");

    printf("This is a log message from the C program (stdout).\n");
    fprintf(stderr, "This is a log message from the C program (stderr).\n");

    /* The result: the argument is JSON already (compact, one line), so it is echoed as is. */
    printf("{\"msg\":\"Hello from arbitrary C program!\",\"activation\":");
    if (activation != NULL) put_json_string(activation); else printf("null");
    printf(",\"args\":%s}\n", args);
    return 0;
}
