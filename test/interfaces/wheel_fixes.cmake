# Make the ROS 2 message packages installed from PyPI wheels usable by
# rosidl_generate_interfaces() in this Python environment.
#
# The wheels' CMake exports give their imported *__rosidl_generator_py targets the
# include directories of the machine that built them (/opt/python/cpXY-cpXY/...:
# Python.h and numpy's headers). Include this file after find_package() of the
# message packages a test interface depends on: every such imported target gets those
# entries replaced by this interpreter's (Python3_EXECUTABLE) include directories.

set(Python3_FIND_UNVERSIONED_NAMES FIRST)
find_package(Python3 REQUIRED COMPONENTS Interpreter Development.Module NumPy)

get_directory_property(_satsam_imported IMPORTED_TARGETS)
foreach(_target IN LISTS _satsam_imported)
  if(NOT _target MATCHES "__rosidl_generator_py$")
    continue()
  endif()
  get_target_property(_dirs ${_target} INTERFACE_INCLUDE_DIRECTORIES)
  if(NOT _dirs)
    set(_dirs "")
  endif()
  list(FILTER _dirs EXCLUDE REGEX "^/opt/python/")
  list(APPEND _dirs ${Python3_INCLUDE_DIRS} ${Python3_NumPy_INCLUDE_DIRS})
  list(REMOVE_DUPLICATES _dirs)
  set_target_properties(${_target} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${_dirs}")
endforeach()
