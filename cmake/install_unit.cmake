# Run by `cmake --install` (install(SCRIPT)): writes ringstreamd.service with the paths of
# this installation, so --prefix given at install time is what the unit names. Expects
# RS_SRC, RS_UNITDIR, RS_CONFDIR, RS_BINDIR and RS_DOCDIR (set by install(CODE) before).
set(RS_BINDIR_FULL "${CMAKE_INSTALL_PREFIX}/${RS_BINDIR}")
set(RS_DOCDIR_FULL "${CMAKE_INSTALL_PREFIX}/${RS_DOCDIR}")
set(RS_UNITDIR_FULL "${CMAKE_INSTALL_PREFIX}/${RS_UNITDIR}")
set(out "$ENV{DESTDIR}${RS_UNITDIR_FULL}/ringstreamd.service")
message(STATUS "Installing: ${out}")
configure_file("${RS_SRC}/scripts/systemd/ringstreamd.service.in" "${out}" @ONLY)
