# Compiling BPF C programs (*.bpf.c) with clang-19 -target bpf into objects
# the loader reads. Used by tests, examples and benchmarks.
find_program(BPF_CLANG NAMES clang-19 REQUIRED)

# userbpf_bpf_objects(TARGET OUTDIR SOURCES...): one .bpf.o per source in
# OUTDIR, built by the custom target TARGET.
function(userbpf_bpf_objects target outdir)
  set(objs)
  foreach(src ${ARGN})
    get_filename_component(base ${src} NAME_WE)
    set(obj ${outdir}/${base}.bpf.o)
    add_custom_command(
      OUTPUT ${obj}
      COMMAND ${CMAKE_COMMAND} -E make_directory ${outdir}
      COMMAND ${BPF_CLANG} -g -O2 -target bpf -mcpu=v4
              -D__TARGET_ARCH_x86
              -I${CMAKE_SOURCE_DIR}/include
              -I/usr/include/x86_64-linux-gnu
              -MD -MF ${obj}.d
              -c ${src} -o ${obj}
      DEPENDS ${src}
      DEPFILE ${obj}.d
      COMMENT "BPF ${base}.bpf.c"
      VERBATIM)
    list(APPEND objs ${obj})
  endforeach()
  add_custom_target(${target} ALL DEPENDS ${objs})
endfunction()
