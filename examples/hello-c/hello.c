#include <stdio.h>

int main(void) {
    printf("Hello from a kiln multi-stage build!\n");
    return 0;
}
