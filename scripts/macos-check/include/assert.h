/* Stub for the macOS compile check (scripts/check-macos): nothing is run. */
#pragma once
#define assert(x) ((void)0)
