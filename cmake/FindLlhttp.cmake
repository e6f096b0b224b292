# Debian's node-llhttp ships llhttp's C sources, not a library: build them here as a static
# library, in strict mode (the loose default accepts request-smuggling desyncs, see issue #2).
find_path(LLHTTP_INCLUDE_DIR llhttp.h PATHS /usr/share/include/llhttp /usr/include/llhttp)
find_path(LLHTTP_SOURCE_DIR llhttp.c PATHS /usr/share/llhttp)
include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(Llhttp REQUIRED_VARS LLHTTP_INCLUDE_DIR LLHTTP_SOURCE_DIR)
if(Llhttp_FOUND AND NOT TARGET llhttp::llhttp)
  add_library(llhttp_static STATIC
    ${LLHTTP_SOURCE_DIR}/llhttp.c ${LLHTTP_SOURCE_DIR}/api.c ${LLHTTP_SOURCE_DIR}/http.c)
  target_include_directories(llhttp_static SYSTEM PUBLIC ${LLHTTP_INCLUDE_DIR})
  target_compile_definitions(llhttp_static PUBLIC LLHTTP_STRICT_MODE=1)
  target_compile_options(llhttp_static PRIVATE -w -O2)
  add_library(llhttp::llhttp ALIAS llhttp_static)
endif()
