# Entry points: `make demo` and `make test`. Both install what is missing first.
JOBS ?= $(shell nproc)
BUILD ?= build
BUILD_ASAN ?= build-asan
BUILD_FUZZ ?= build-fuzz
BUILD_TSAN ?= build-tsan
CMAKE_FLAGS ?=
# Seconds each fuzz target runs in `make fuzz`.
FUZZ_SECONDS ?= 60

.PHONY: all setup build build-asan build-fuzz build-tsan test test-fast test-tsan fuzz fuzz-replay tidy demo bench bench-serve bench-quality bench-defaults clean

all: build

setup:
	@bash scripts/setup.sh

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS)

build: setup $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

$(BUILD_ASAN)/CMakeCache.txt:
	cmake -S . -B $(BUILD_ASAN) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLDAPROJ_SANITIZE=ON -DLDAPROJ_BUILD_BENCH=OFF $(CMAKE_FLAGS)

build-asan: setup $(BUILD_ASAN)/CMakeCache.txt
	cmake --build $(BUILD_ASAN) -j $(JOBS)

# ThreadSanitizer: only the in-process concurrency tests, from the sources they need.
$(BUILD_TSAN)/CMakeCache.txt:
	cmake -S . -B $(BUILD_TSAN) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLDAPROJ_TSAN_TESTS=ON -DLDAPROJ_BUILD_BENCH=OFF $(CMAKE_FLAGS)

build-tsan: setup $(BUILD_TSAN)/CMakeCache.txt
	cmake --build $(BUILD_TSAN) -j $(JOBS)

test-tsan: build-tsan
	cd $(BUILD_TSAN) && ctest --output-on-failure -j $(JOBS)

# libFuzzer targets (clang; fuzz/CMakeLists.txt builds each from the sources it needs).
$(BUILD_FUZZ)/CMakeCache.txt:
	cmake -S fuzz -B $(BUILD_FUZZ) -DCMAKE_CXX_COMPILER=clang++ $(CMAKE_FLAGS)

build-fuzz: setup $(BUILD_FUZZ)/CMakeCache.txt
	cmake --build $(BUILD_FUZZ) -j $(JOBS)

# Release suite, then the same suite under AddressSanitizer + UBSan, the
# concurrency tests under ThreadSanitizer, and every committed fuzz input
# (seeds and crash regressions) through its target.
test: build build-asan build-tsan build-fuzz
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)
	cd $(BUILD_ASAN) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ctest --output-on-failure -j $(JOBS)
	cd $(BUILD_TSAN) && ctest --output-on-failure -j $(JOBS)
	bash scripts/fuzz.sh $(BUILD_FUZZ) replay $(JOBS)

# Each fuzz target for FUZZ_SECONDS (JOBS at a time); a failure leaves its
# input in $(BUILD_FUZZ)/artifacts/<target>/ (docs/RELIABILITY.md says what to do with it).
fuzz: build-fuzz
	bash scripts/fuzz.sh $(BUILD_FUZZ) $(FUZZ_SECONDS) $(JOBS)

fuzz-replay: build-fuzz
	bash scripts/fuzz.sh $(BUILD_FUZZ) replay $(JOBS)

# clang-tidy (.clang-tidy) on src/ with the release build's compile commands.
# The files with libtorch headers go through scripts/tidy_libtorch_files.sh: no
# clang in Debian 12 parses libtorch in C++20, so only findings in our own files
# count there (docs/RELIABILITY.md).
tidy: build
	run-clang-tidy -p $(BUILD) -j $(JOBS) -quiet $$(grep -L '<torch/' $(CURDIR)/src/*/*.cpp)
	bash scripts/tidy_libtorch_files.sh $(BUILD)

# Release suite only (quick local loop).
test-fast: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

demo: build
	@bash scripts/demo.sh $(BUILD)/ldaproj

# Benchmarks (Google Benchmark); see docs/BENCHMARKS.md for the recorded numbers.
bench: build
	bash bench/teacher_compare.sh $(BUILD)
	bash bench/encoder_compare.sh $(BUILD)

# HTTP load test of `ldaproj serve` with wrk (loopback, 10 s per case).
bench-serve: build
	bash scripts/setup.sh --bench >/dev/null
	bash bench/serve_load.sh $(BUILD) 10 8

# Retrieval quality on CLINC150 (../shared/datasets/clinc150, skipped when absent) and on the demo
# data, every method, choices on val only; writes the tables into docs/QUALITY.md. Embeddings,
# tuning and trained models are cached under $(BUILD)/quality/, so reruns only re-validate.
bench-quality: build
	nice python3 bench/quality.py --build $(BUILD)

# `train` with no flags against --no-tune on the demo, CLINC150 and
# WikiAnswers (those two skipped when ../shared/datasets lacks them): R@1 per
# method, train wall time and peak RSS (docs/QUALITY.md, "Defaults at every scale").
bench-defaults: build
	nice python3 bench/defaults_quality.py --build $(BUILD)

clean:
	rm -rf $(BUILD) $(BUILD_ASAN) $(BUILD_TSAN) $(BUILD_FUZZ)
