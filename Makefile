# checkoutd — build, run, test.  `make help` lists the targets.
#
# Modes (MODE=...): release (default, -O2), debug (-O0), asan (ASan+UBSan, -O1).
# Each mode builds into build/$(MODE)/, so they never mix objects.

MODE     ?= release
B        := build/$(MODE)
CC       ?= cc
PKGS     := libmicrohttpd libcurl jansson hiredis libcrypto libcares sqlite3 gnutls
VERSION  := $(shell cat VERSION 2>/dev/null || echo 0.0.0)

WARN     := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wformat=2 -Wvla
BASE     := -std=c11 -D_GNU_SOURCE -g -pthread -MMD -MP -Ilib -DCHECKOUTD_VERSION='"$(VERSION)"'
ifeq ($(MODE),release)
  OPT := -O2
else ifeq ($(MODE),debug)
  OPT := -O0
else ifeq ($(MODE),asan)
  OPT := -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all
else ifeq ($(MODE),tsan)
  OPT := -O1 -fno-omit-frame-pointer -fsanitize=thread
else
  $(error MODE must be release, debug, asan or tsan)
endif

CFLAGS   += $(BASE) $(WARN) $(OPT) $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LDFLAGS  += $(OPT) -pthread
LDLIBS   += $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lm

LIB_SRC  := $(wildcard lib/*.c)
SVC_SRC  := $(filter-out service/main.c,$(wildcard service/*.c))
UP_SRC   := $(wildcard upstreams/*.c)
SUP_SRC  := $(wildcard tests/support/*.c)
TEST_SRC := $(wildcard tests/test_*.c)

obj       = $(patsubst %.c,$(B)/obj/%.o,$(1))
LIB_OBJ  := $(call obj,$(LIB_SRC))
SVC_OBJ  := $(call obj,$(SVC_SRC))
UP_OBJ   := $(call obj,$(UP_SRC))
SUP_OBJ  := $(call obj,$(SUP_SRC))
TESTS    := $(patsubst tests/%.c,$(B)/tests/%,$(TEST_SRC))
# Files embedded at build time: service/status.html as a C array (service/status.c serves it).
GEN_OBJ  := $(B)/gen/status_html.o

.PHONY: all help deps run test test-asan test-tsan check clean format lint bench docs
all: $(B)/checkoutd $(B)/fake-upstreams

help:
	@echo "make            build checkoutd and fake-upstreams (release) into build/release/"
	@echo "make run        install missing packages, build, start fake upstreams + checkoutd"
	@echo "make test       install missing packages, build, run every test (and /status in chromium)"
	@echo "make test-asan  the same tests under ASan+UBSan (build/asan/)"
	@echo "make test-tsan  the same tests under ThreadSanitizer (build/tsan/)"
	@echo "make check      test + test-asan (what .ci/run runs)"
	@echo "make docs       docs/openapi.yaml rendered to build/docs/api.html (redocly build-docs)"
	@echo "make format     clang-format every C file;  make lint  cppcheck + format check"
	@echo "make clean      remove build/"

$(B)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(B)/checkoutd: $(call obj,service/main.c) $(SVC_OBJ) $(LIB_OBJ) $(GEN_OBJ)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

# The test build of checkoutd: the same objects but lib/jr.c, compiled with its fault points
# (CHECKOUTD_JOURNAL_FAULT, see lib/jr.c) that the kill tests arm. Never shipped.
$(B)/obj-faults/lib/jr.o: lib/jr.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -DJR_FAULTS -c $< -o $@

$(B)/checkoutd-faults: $(call obj,service/main.c) $(SVC_OBJ) $(filter-out $(B)/obj/lib/jr.o,$(LIB_OBJ)) $(B)/obj-faults/lib/jr.o $(GEN_OBJ)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

# The page's bytes through od (coreutils): no xxd, no linker tricks, works with every $(CC).
$(B)/gen/status_html.c: service/status.html
	@mkdir -p $(dir $@)
	@{ echo '/* generated from service/status.html by the Makefile: do not edit */'; \
	  echo '#include <stddef.h>'; \
	  echo 'extern const unsigned char st_page_html[];'; \
	  echo 'extern const size_t st_page_html_len;'; \
	  echo 'const unsigned char st_page_html[] = {'; \
	  od -An -v -tx1 $< | sed -e 's/\([0-9a-f][0-9a-f]\)/0x\1,/g'; \
	  echo '};'; \
	  echo 'const size_t st_page_html_len = sizeof(st_page_html);'; } > $@.tmp && mv $@.tmp $@

$(B)/gen/%.o: $(B)/gen/%.c
	$(CC) $(CFLAGS) -c $< -o $@

# fake-upstreams' https mode calls GnuTLS itself (to require client certificates); libgnutls28-dev
# comes with libmicrohttpd-dev, libgnutls30 with libmicrohttpd12.
$(B)/fake-upstreams: $(UP_OBJ)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) $(shell pkg-config --libs gnutls 2>/dev/null) -o $@

$(B)/tests/%: $(call obj,tests/%.c) $(SUP_OBJ) $(SVC_OBJ) $(LIB_OBJ) $(GEN_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -lcmocka -o $@

deps:
	@sh scripts/deps.sh build

run: deps
	@$(MAKE) --no-print-directory all
	@sh scripts/run.sh $(B)

# Every test binary gets the built programs' paths; each starts what it needs on free ports.
test:
	@sh scripts/deps.sh test
	@$(MAKE) --no-print-directory all $(TESTS) $(B)/checkoutd-faults
	@sh scripts/run-tests.sh $(B) $(TESTS)
	@sh tests/browser/run.sh $(B)
	@sh tests/docs/run.sh $(B)

test-asan:
	@$(MAKE) --no-print-directory MODE=asan test

# ThreadSanitizer: the tests and the daemons they start (halt_on_error: a race fails the test).
test-tsan:
	@$(MAKE) --no-print-directory MODE=tsan test

check: test test-asan

# The API reference: one self-contained HTML page (the Redoc bundle inlined), from docs/openapi.yaml
# by @redocly/cli (pinned in tests/docs/package-lock.json, installed by npm ci on first use).
docs: build/docs/api.html
build/docs/api.html: docs/openapi.yaml tests/docs/redocly.yaml tests/docs/package-lock.json
	@sh scripts/deps.sh test
	@node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 19) ? 0 : 1)' || \
	  { echo "make docs: @redocly/cli 2.x needs node >= 20.19, this is $$(node --version)" >&2; exit 1; }
	@test -f tests/docs/node_modules/@redocly/cli/package.json || \
	  (cd tests/docs && npm ci --no-audit --no-fund --loglevel=error)
	@mkdir -p $(dir $@)
	REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true tests/docs/node_modules/.bin/redocly \
	  build-docs --inlineBundle --config tests/docs/redocly.yaml --title "checkoutd API" \
	  docs/openapi.yaml -o $@ 2>&1 | grep -v -e '^ *[╔║╚]' -e '^$$'
	@test -s $@

# wrk + nginx stubs + the Python reference peer (../shared/peers); always the release build.
# BENCH_QUICK=1 for a smoke run, BENCH_SECONDS / BENCH_ROUNDS to change the length (bench/bench.sh).
bench:
	@sh scripts/deps.sh bench
	@$(MAKE) --no-print-directory MODE=release all
	@bash bench/bench.sh build/release

format:
	clang-format -i $(wildcard lib/*.[ch] service/*.[ch] upstreams/*.[ch] tests/*.[ch] tests/support/*.[ch])

lint:
	@sh scripts/deps.sh lint
	clang-format --dry-run --Werror $(wildcard lib/*.[ch] service/*.[ch] upstreams/*.[ch] tests/*.[ch] tests/support/*.[ch])
	cppcheck --quiet --error-exitcode=1 --enable=warning,performance,portability --std=c11 \
	  --suppress=missingIncludeSystem -Ilib lib service upstreams

clean:
	rm -rf build

# ---- fuzz: libFuzzer drivers (fuzz/*.c) under ASan+UBSan, built with clang into build/fuzz/ ----
# `make fuzz [FUZZ_SECONDS=60]`: replays fuzz/regressions/<driver>/* once, then fuzzes each driver
# for FUZZ_SECONDS with its seeds (fuzz/corpus/<driver>, read only) and dictionary; new inputs go
# to build/fuzz/corpus/<driver>, crashes to build/fuzz/artifacts/<driver>/. Non-zero if any crashed.
# Library objects get fuzzer-no-link (coverage only); only the driver links libFuzzer's main.
FUZZ_SECONDS ?= 60
FUZZ_CC      ?= clang
FUZZ_B       := build/fuzz
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
FUZZ_CFLAGS  := $(BASE) $(filter-out -Werror,$(WARN)) -O1 $(FUZZ_SAN) -Iservice \
                $(shell pkg-config --cflags libcurl jansson hiredis libcrypto sqlite3 2>/dev/null)
FUZZ_LDLIBS  := $(shell pkg-config --libs libcurl jansson hiredis libcrypto sqlite3 2>/dev/null) -lm
FUZZ_SRC     := $(LIB_SRC) $(filter-out service/main.c service/server.c service/status.c service/admin.c service/listen_tls.c service/clen.c,$(wildcard service/*.c))
FUZZ_OBJ     := $(patsubst %.c,$(FUZZ_B)/obj/%.o,$(FUZZ_SRC))
FUZZERS      := $(patsubst fuzz/%.c,%,$(wildcard fuzz/fuzz_*.c))
FUZZ_FLAGS   := -timeout=10 -rss_limit_mb=2048 -print_final_stats=1

.PHONY: fuzz fuzz-build
.SECONDARY: $(FUZZ_OBJ)
$(FUZZ_B)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c $< -o $@

$(FUZZ_B)/%: fuzz/%.c $(FUZZ_OBJ)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(WARN) -fsanitize=fuzzer $< $(FUZZ_OBJ) $(FUZZ_LDLIBS) -o $@

fuzz-build:
	@sh scripts/deps.sh fuzz
	@$(MAKE) --no-print-directory $(addprefix $(FUZZ_B)/,$(FUZZERS))

FUZZ_REPORT  := grep -m 8 -E 'invariant failed|^SUMMARY|runtime error|Test unit written'

fuzz: fuzz-build
	@failed=""; \
	for f in $(FUZZERS); do \
	  mkdir -p $(FUZZ_B)/corpus/$$f $(FUZZ_B)/artifacts/$$f; \
	  for r in $$(find fuzz/regressions/$$f -type f ! -name '.*' 2>/dev/null | sort); do \
	    $(FUZZ_B)/$$f $(FUZZ_FLAGS) $$r > $(FUZZ_B)/$$f.regression.log 2>&1 \
	      && echo "== $$f: regression $$r ok" \
	      || { echo "== $$f: regression $$r FAILED:"; $(FUZZ_REPORT) $(FUZZ_B)/$$f.regression.log; \
	           failed="$$failed $$r"; }; \
	  done; \
	  echo "== $$f: fuzzing for $(FUZZ_SECONDS) s"; \
	  $(FUZZ_B)/$$f $(FUZZ_FLAGS) -max_total_time=$(FUZZ_SECONDS) -dict=fuzz/$$f.dict \
	    -artifact_prefix=$(FUZZ_B)/artifacts/$$f/ $(FUZZ_B)/corpus/$$f fuzz/corpus/$$f \
	    > $(FUZZ_B)/$$f.log 2>&1 \
	    || { echo "== $$f: CRASHED (log: $(FUZZ_B)/$$f.log):"; $(FUZZ_REPORT) $(FUZZ_B)/$$f.log; \
	         failed="$$failed $$f"; }; \
	  grep -E '^#[0-9]+[[:space:]]+DONE|^stat::average_exec_per_sec' $(FUZZ_B)/$$f.log || true; \
	done; \
	if [ -n "$$failed" ]; then echo "fuzz: FAILED:$$failed"; exit 1; fi; \
	echo "fuzz: $(words $(FUZZERS)) drivers, every regression input ok, no crash"

# ---- deploy: docker/ (image, compose files, Kubernetes manifests) and the scale-out test ----
# `make smoke`: builds docker/Dockerfile with podman and runs the image, both compose files and the
# Kubernetes manifest, checking answers, health, non-root, SIGTERM drain (docker/smoke.sh; root;
# about 1.5 min, plus ~30 s of debootstrap the first time). `make scaleout`: 3 replicas behind
# haproxy on loopback under wrk, one SIGTERMed, one killed -9, every answer counted (bench/scaleout.sh).
.PHONY: smoke scaleout soak
smoke:
	@bash docker/smoke.sh

scaleout:
	@sh scripts/deps.sh build
	@$(MAKE) --no-print-directory MODE=release all
	@bash bench/scaleout.sh build/release
	@sh scripts/deps.sh test
	@python3 bench/scaleout_idem.py build/release

# `make soak [SOAK_MINUTES=10]`: checkoutd under a steady mixed load for N minutes (fractional: 0.5)
# while the fake upstreams are killed -9 and restarted and a faulty upstream resets, hangs, answers
# 5xx and truncated bodies; every answer checked, RSS/fds sampled to bench/out/ (bench/soak.sh).
SOAK_MINUTES ?= 10
soak:
	@sh scripts/deps.sh build
	@$(MAKE) --no-print-directory MODE=release all
	@SOAK_MINUTES=$(SOAK_MINUTES) bash bench/soak.sh build/release

-include $(shell find build -name '*.d' 2>/dev/null)
