#!/usr/bin/env bash
# Builds and installs the C library: PREFIX/lib/libidefics3.{so,a}, PREFIX/include/idefics3.h and
# PREFIX/lib/pkgconfig/idefics3.pc (the layout cargo-c produces). Usage: scripts/install_capi.sh PREFIX
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=${1:?usage: scripts/install_capi.sh PREFIX}
cargo build --release --lib
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
install -d "$prefix/lib/pkgconfig" "$prefix/include"
install -m 644 include/idefics3.h "$prefix/include/idefics3.h"
install -m 755 target/release/libidefics3.so "$prefix/lib/libidefics3.so.$version"
ln -sf "libidefics3.so.$version" "$prefix/lib/libidefics3.so"
install -m 644 target/release/libidefics3.a "$prefix/lib/libidefics3.a"
cat > "$prefix/lib/pkgconfig/idefics3.pc" <<PC
prefix=$prefix
libdir=\${prefix}/lib
includedir=\${prefix}/include

Name: idefics3
Description: Inference engine for the Idefics3 vision-language model
Version: $version
Libs: -L\${libdir} -lidefics3
Libs.private: -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc
Cflags: -I\${includedir}
PC
echo "installed idefics3 $version into $prefix"
