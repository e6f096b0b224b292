# Runs at install time (included by an install(CODE) step of the top-level CMakeLists.txt): writes
# deploy/trellis.service.in with the installed binary and example configuration as ExecStart's
# paths, under the prefix given to `cmake --install` (DESTDIR staging: still the final prefix, as a
# unit must name where the files will be), and installs it to <prefix>/lib/systemd/system.
#
# In:  CMAKE_INSTALL_PREFIX, TRELLIS_UNIT_TEMPLATE, TRELLIS_UNIT_OUTPUT (a scratch file),
#      TRELLIS_INSTALL_BINDIR, TRELLIS_INSTALL_SYSCONFDIR (GNUInstallDirs' values: relative to the
#      prefix, or absolute).

# A path as one word of a unit file's command line: as is when it holds only ordinary characters,
# else in double quotes with \ and " escaped, % (specifiers) doubled, and $ (variables) doubled in
# an argument (systemd expands no variable in the executable's own name). systemd refuses an
# executable name with a quote or a backslash at all: such a prefix gets a warning (and a unit that
# will not start).
function(trellis_unit_word out path kind)
  if(path MATCHES "^[A-Za-z0-9/._+,:@=-]+$")
    set(${out} "${path}" PARENT_SCOPE)
    return()
  endif()
  if(kind STREQUAL "executable" AND path MATCHES "[\"'\\]")
    message(WARNING "trellis.service: systemd cannot take ${path} in ExecStart (quote or backslash)")
  endif()
  string(REPLACE "\\" "\\\\" path "${path}")
  string(REPLACE "\"" "\\\"" path "${path}")
  string(REPLACE "%" "%%" path "${path}")
  if(kind STREQUAL "argument")
    string(REPLACE "$" "$$" path "${path}")
  endif()
  set(${out} "\"${path}\"" PARENT_SCOPE)
endfunction()

function(trellis_install_path out dir)
  if(IS_ABSOLUTE "${dir}")
    set(${out} "${dir}" PARENT_SCOPE)
  else()
    set(${out} "${CMAKE_INSTALL_PREFIX}/${dir}" PARENT_SCOPE)
  endif()
endfunction()

trellis_install_path(_trellis_bindir "${TRELLIS_INSTALL_BINDIR}")
trellis_install_path(_trellis_sysconfdir "${TRELLIS_INSTALL_SYSCONFDIR}")
trellis_unit_word(TRELLIS_BIN "${_trellis_bindir}/trellis" executable)
trellis_unit_word(TRELLIS_CONFIG "${_trellis_sysconfdir}/trellis/server.json" argument)
configure_file("${TRELLIS_UNIT_TEMPLATE}" "${TRELLIS_UNIT_OUTPUT}" @ONLY)
file(INSTALL "${TRELLIS_UNIT_OUTPUT}" DESTINATION "${CMAKE_INSTALL_PREFIX}/lib/systemd/system"
     RENAME trellis.service)
