# checkoutd — build, run, test.  `make help` lists the targets.
#
# Modes (MODE=...): release (default, -O2), debug (-O0), asan (ASan+UBSan, -O1).
# Each mode builds into build/$(MODE)/, so they never mix objects.

MODE     ?= release
B        := build/$(MODE)
CC       ?= cc
PKGS     := libmicrohttpd libcurl jansson
VERSION  := $(shell cat VERSION 2>/dev/null || echo 0.0.0)

WARN     := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wformat=2 -Wvla
BASE     := -std=c11 -D_GNU_SOURCE -g -pthread -MMD -MP -Ilib -DCHECKOUTD_VERSION='"$(VERSION)"'
ifeq ($(MODE),release)
  OPT := -O2
else ifeq ($(MODE),debug)
  OPT := -O0
else ifeq ($(MODE),asan)
  OPT := -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all
else
  $(error MODE must be release, debug or asan)
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

.PHONY: all help deps run test test-asan check clean format lint
all: $(B)/checkoutd $(B)/fake-upstreams

help:
	@echo "make            build checkoutd and fake-upstreams (release) into build/release/"
	@echo "make run        install missing packages, build, start fake upstreams + checkoutd"
	@echo "make test       install missing packages, build, run every test"
	@echo "make test-asan  the same tests under ASan+UBSan (build/asan/)"
	@echo "make check      test + test-asan (what .ci/run runs)"
	@echo "make format     clang-format every C file;  make lint  cppcheck + format check"
	@echo "make clean      remove build/"

$(B)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(B)/checkoutd: $(call obj,service/main.c) $(SVC_OBJ) $(LIB_OBJ)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

$(B)/fake-upstreams: $(UP_OBJ)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

$(B)/tests/%: $(call obj,tests/%.c) $(SUP_OBJ) $(SVC_OBJ) $(LIB_OBJ)
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
	@$(MAKE) --no-print-directory all $(TESTS)
	@sh scripts/run-tests.sh $(B) $(TESTS)

test-asan:
	@$(MAKE) --no-print-directory MODE=asan test

check: test test-asan

format:
	clang-format -i $(wildcard lib/*.[ch] service/*.[ch] upstreams/*.[ch] tests/*.[ch] tests/support/*.[ch])

lint:
	@sh scripts/deps.sh lint
	clang-format --dry-run --Werror $(wildcard lib/*.[ch] service/*.[ch] upstreams/*.[ch] tests/*.[ch] tests/support/*.[ch])
	cppcheck --quiet --error-exitcode=1 --enable=warning,performance,portability --std=c11 \
	  --suppress=missingIncludeSystem -Ilib lib service upstreams

clean:
	rm -rf build

-include $(shell find build -name '*.d' 2>/dev/null)
