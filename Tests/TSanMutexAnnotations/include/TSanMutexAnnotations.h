// Nothing to import: linking this target into the test binary is what it is for (see the .c file).
#include <stdint.h>
