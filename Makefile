# userbpf: one-command set-up, build, demo and tests on Debian 12.
#   make demo   install what is missing, build, run the main example
#   make test   install what is missing, build, run all tests
BUILD      ?= build
ASAN_BUILD ?= build-asan
FUZZ_BUILD ?= build-fuzz
TSAN_BUILD ?= build-tsan
JOBS       ?= $(shell nproc)
CMAKE_FLAGS = -G Ninja -DCMAKE_C_COMPILER=clang-19 -DCMAKE_CXX_COMPILER=clang++-19

.PHONY: all deps build demo test asan-test tsan-test fuzz bench format format-check clean

all: build

deps:
	@bash scripts/install-deps.sh

$(BUILD)/build.ninja: | deps
	cmake -S . -B $(BUILD) $(CMAKE_FLAGS) -DCMAKE_BUILD_TYPE=RelWithDebInfo

build: deps $(BUILD)/build.ninja
	cmake --build $(BUILD) -j $(JOBS)

demo: build
	bash examples/run_demo.sh $(BUILD)

test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

# ASan+UBSan build of the library and tests.
asan-test: deps
	cmake -S . -B $(ASAN_BUILD) $(CMAKE_FLAGS) -DCMAKE_BUILD_TYPE=Debug -DUSERBPF_SANITIZE=ON
	cmake --build $(ASAN_BUILD) -j $(JOBS)
	cd $(ASAN_BUILD) && ctest --output-on-failure -j $(JOBS)

# ThreadSanitizer build of the concurrent layers: the mem and maps tests.
tsan-test: deps
	cmake -S . -B $(TSAN_BUILD) $(CMAKE_FLAGS) -DCMAKE_BUILD_TYPE=Debug -DUSERBPF_TSAN=ON
	cmake --build $(TSAN_BUILD) -j $(JOBS) --target userbpf_mem_tests userbpf_maps_tests
	$(TSAN_BUILD)/tests/userbpf_mem_tests
	$(TSAN_BUILD)/tests/userbpf_maps_tests

# libFuzzer targets, run for FUZZ_SECONDS each.
FUZZ_SECONDS ?= 60
fuzz: deps
	cmake -S . -B $(FUZZ_BUILD) $(CMAKE_FLAGS) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DUSERBPF_FUZZ=ON -DUSERBPF_SANITIZE=ON
	cmake --build $(FUZZ_BUILD) -j $(JOBS) --target userbpf_fuzz_loader
	bash tests/fuzz/run_fuzzers.sh $(FUZZ_BUILD) $(FUZZ_SECONDS)

# Kernel vs userbpf (interpreter, JIT) vs native C++: table, markdown, chart.
bench: deps $(BUILD)/build.ninja
	cmake --build $(BUILD) -j $(JOBS) --target userbpf_bench_all
	bash bench/run_bench.sh $(BUILD)

format:
	clang-format-19 -i $$(git ls-files '*.cc' '*.h')

format-check:
	clang-format-19 --dry-run --Werror $$(git ls-files '*.cc' '*.h')

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD) $(TSAN_BUILD)
