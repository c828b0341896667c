/* The stb functions the C++ tree calls (stbi_load*, stbi_write_png), compiled once into libstb.a: the sources
 * include the headers without STB_*_IMPLEMENTATION and link libstb, as Debian's libstb-dev packages them. */
#define STB_IMAGE_IMPLEMENTATION
#include "stb_image.h"
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include "stb_image_write.h"
