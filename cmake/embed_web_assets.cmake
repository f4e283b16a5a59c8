# Turns the web page's files into a C++ include with one constexpr string per
# file, so the server binary carries its page. Run as
#   cmake -DOUTPUT=<file.inc> -DFILES="<a;b;...>" -P embed_web_assets.cmake
# Every byte is written as a \xNN escape, which keeps any content (quotes,
# backslashes, NUL, UTF-8) intact.
if(NOT OUTPUT OR NOT FILES)
  message(FATAL_ERROR "embed_web_assets.cmake needs -DOUTPUT=... and -DFILES=...")
endif()

set(body "// Generated from web/ by cmake/embed_web_assets.cmake; do not edit.\n")
string(APPEND body "namespace ldaproj::serve {\nnamespace {\n")
set(table "")
set(index 0)
foreach(file IN LISTS FILES)
  get_filename_component(name "${file}" NAME)
  get_filename_component(ext "${file}" LAST_EXT)
  if(ext STREQUAL ".html")
    set(type "text/html; charset=utf-8")
  elseif(ext STREQUAL ".js")
    set(type "text/javascript; charset=utf-8")
  elseif(ext STREQUAL ".css")
    set(type "text/css; charset=utf-8")
  elseif(ext STREQUAL ".svg")
    set(type "image/svg+xml")
  else()
    message(FATAL_ERROR "embed_web_assets.cmake: no content type for ${file}")
  endif()
  file(READ "${file}" hex HEX)
  string(LENGTH "${hex}" hex_length)
  math(EXPR size "${hex_length} / 2")
  # 16 bytes per source line: mark every 32 hex digits with a "g" (not a hex
  # digit), escape each byte, then turn the marks into line breaks.
  string(REPEAT "[0-9a-f]" 32 line_pattern)
  string(REGEX REPLACE "(${line_pattern})" "\\1g" marked "${hex}")
  string(REGEX REPLACE "([0-9a-f][0-9a-f])" "\\\\x\\1" escaped "${marked}")
  string(REPLACE "g" "\"\n    \"" escaped "${escaped}")
  string(APPEND body "// ${name}\nconstexpr char kAsset${index}[] =\n    \"${escaped}\";\n")
  string(APPEND table "    {\"/${name}\", \"${type}\", {kAsset${index}, ${size}}},\n")
  math(EXPR index "${index} + 1")
endforeach()
string(APPEND body "}  // namespace\n\nconstexpr WebAsset kWebAssets[] = {\n${table}};\n\n}  // namespace ldaproj::serve\n")

# Only touch the output when it changed, so unrelated builds do not recompile.
if(EXISTS "${OUTPUT}")
  file(READ "${OUTPUT}" previous)
  if(previous STREQUAL body)
    return()
  endif()
endif()
file(WRITE "${OUTPUT}" "${body}")
