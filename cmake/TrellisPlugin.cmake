# trellis_add_plugin(<name> [TARGET <target>] <source>...)
#
# Builds a Trellis plugin: a MODULE library named exactly <name>.so (no "lib" prefix), which is
# what "path": "<name>" in server.json looks for in plugin_dir. Everything is compiled with hidden
# visibility (C and C++, inline functions too), and with GNU ld, gold or lld a version script keeps
# the rest local, since hidden visibility alone still exports the C++ standard library's template
# instances (libstdc++ declares namespace std with default visibility). So the one symbol the
# plugin exports is trellis_plugin_entry: nothing it compiles in (a JSON library, std::string) can
# bind to another plugin's copy, and loading it is quicker. Links Trellis::plugin (the headers;
# C++20 for C++ sources). The target is <name> unless TARGET names another; add libraries to it as usual:
#
#   find_package(Trellis REQUIRED)
#   trellis_add_plugin(items items.cpp)
#   target_link_libraries(items PRIVATE Threads::Threads)
#
# Shipped with the SDK (find_package(Trellis) includes it) and used for the bundled plugins.
include_guard(GLOBAL)

function(trellis_add_plugin name)
  cmake_parse_arguments(PARSE_ARGV 1 arg "" "TARGET" "")
  set(target ${name})
  if(arg_TARGET)
    set(target ${arg_TARGET})
  endif()
  if(NOT arg_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "trellis_add_plugin(${name}): no source files")
  endif()
  add_library(${target} MODULE ${arg_UNPARSED_ARGUMENTS})
  set_target_properties(${target} PROPERTIES
    OUTPUT_NAME ${name} PREFIX "" SUFFIX ".so"
    C_VISIBILITY_PRESET hidden CXX_VISIBILITY_PRESET hidden VISIBILITY_INLINES_HIDDEN ON)
  target_link_libraries(${target} PRIVATE Trellis::plugin)
  if(CMAKE_SYSTEM_NAME STREQUAL "Linux" OR CMAKE_SYSTEM_NAME MATCHES "BSD")
    set(map ${CMAKE_BINARY_DIR}/trellis_plugin_exports.map)
    if(NOT EXISTS ${map})
      file(WRITE ${map} "{\n  global: trellis_plugin_entry;\n  local: *;\n};\n")
    endif()
    target_link_options(${target} PRIVATE "LINKER:--version-script=${map}")
    set_property(TARGET ${target} APPEND PROPERTY LINK_DEPENDS ${map})
  endif()
endfunction()
