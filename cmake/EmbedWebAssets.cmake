# Writes a C++ source that holds files as byte arrays and a FindWebAsset()
# over them (ws/web_assets.h). Run in script mode by a custom command, so a
# changed file is embedded again by the next build:
#
#   cmake -DTEMPLATE=ws/web_assets.cc.in -DOUTPUT=web_assets.cc
#         "-DASSETS=/url/path|/file/path|/other/url|/other/file" -P EmbedWebAssets.cmake
#
# The Content-Type comes from the file's extension; scripts may be read by
# pages of any origin (they are imported cross-origin), other files may not.
cmake_minimum_required(VERSION 3.25)

string(REPLACE "|" ";" _assets "${ASSETS}")
list(LENGTH _assets _n)
math(EXPR _pairs "${_n} % 2")
if(_n EQUAL 0 OR NOT _pairs EQUAL 0)
  message(FATAL_ERROR "ASSETS must be URL-path|file pairs, got '${ASSETS}'")
endif()

set(EMBED_DATA "")
set(EMBED_ENTRIES "")
set(EMBED_SOURCES "")
set(_index 0)
while(_assets)
  list(POP_FRONT _assets _url _file)
  get_filename_component(_ext "${_file}" LAST_EXT)
  if(_ext STREQUAL ".js")
    set(_type "text/javascript; charset=utf-8")
    set(_cross "true")
  elseif(_ext STREQUAL ".html")
    set(_type "text/html; charset=utf-8")
    set(_cross "false")
  else()
    message(FATAL_ERROR "no Content-Type for '${_file}': add its extension to ${CMAKE_CURRENT_LIST_FILE}")
  endif()
  get_filename_component(_name "${_file}" NAME)
  file(READ "${_file}" _hex HEX)
  file(SIZE "${_file}" _size)
  # 16 bytes a line (CMake regexes have no {n}).
  string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," _bytes "${_hex}")
  string(REPEAT "0x..," 16 _line)
  string(REGEX REPLACE "(${_line})" "\\1\n    " _bytes "${_bytes}")
  string(APPEND EMBED_DATA
    "// ${_url}: ${_name} (${_size} bytes)\n"
    "const unsigned char kAsset${_index}[] = {\n    ${_bytes}0x00};\n\n")
  string(APPEND EMBED_ENTRIES
    "    {\"${_url}\", \"${_type}\", ${_cross}, kAsset${_index}, ${_size}},\n")
  string(APPEND EMBED_SOURCES " ${_name}")
  math(EXPR _index "${_index} + 1")
endwhile()

configure_file("${TEMPLATE}" "${OUTPUT}" @ONLY)
