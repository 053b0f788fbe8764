// Boost.URL is used header-only: Debian 12 ships no CMake package for the
// compiled library. This is the one translation unit that compiles it.
#include <boost/url/src.hpp>
