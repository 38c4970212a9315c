/* Stub for `cargo check --target x86_64-apple-darwin` on Linux (see
   scripts/check-macos): ring's C code only asks which Apple OS it is for. */
#pragma once
#define TARGET_OS_MAC 1
#define TARGET_OS_OSX 1
#define TARGET_OS_IPHONE 0
#define TARGET_OS_IOS 0
#define TARGET_OS_TV 0
#define TARGET_OS_WATCH 0
#define TARGET_OS_SIMULATOR 0
