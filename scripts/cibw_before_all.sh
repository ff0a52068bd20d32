#!/usr/bin/env bash
# cibuildwheel's before-all (pyproject.toml [tool.cibuildwheel.linux]): builds the C libraries
# mx8 links, once per manylinux_2_28 container, from pinned release tarballs checked against
# their SHA-256, into /usr/local, as Pillow's wheel build does. auditwheel repair then
# vendors them into mx8.libs/. libcurl and OpenSSL come from source too: AlmaLinux 8's
# libcurl 7.61 lacks what mx8 calls (CURLOPT_PROTOCOLS_STR 7.85, curl_multi_poll/wakeup
# 7.66/7.68), and curl >= 8.18 needs OpenSSL 3 (the image has 1.1.1).
# To move a pin, change the version and its hash together (from the project's release page).
set -euxo pipefail

JPEGTURBO_VERSION="${JPEGTURBO_VERSION:-3.2.0}"
JPEGTURBO_SHA256="${JPEGTURBO_SHA256:-6f30092cef9fb839779646608f4ee14ae3cbac989c47fa05e841b0841f09878e}"
LIBPNG_VERSION="${LIBPNG_VERSION:-1.6.58}"
LIBPNG_SHA256="${LIBPNG_SHA256:-28eb403f51f0f7405249132cecfe82ea5c0ef97f1b32c5a65828814ae0d34775}"
OPENSSL_VERSION="${OPENSSL_VERSION:-3.5.9}"
OPENSSL_SHA256="${OPENSSL_SHA256:-603f5602e2eef00d77fbd429d34dcd5822bb301757a1bc9cdb24c670f1eb859a}"
CURL_VERSION="${CURL_VERSION:-8.21.0}"
CURL_SHA256="${CURL_SHA256:-ad6f2f94934b38e31e48272833c99b891d045b4565fe942a53fbd27bd3910e16}"

dnf install -y zlib-devel xz bzip2 perl-IPC-Cmd perl-Time-Piece
if [ "$(uname -m)" = x86_64 ]; then dnf install -y nasm; fi
mkdir -p /tmp/mx8-deps && cd /tmp/mx8-deps
echo /usr/local/lib > /etc/ld.so.conf.d/mx8-deps.conf
# libjpeg-turbo: the libjpeg API only, SIMD required (nasm / NEON); PIC as in Pillow's build
curl -fsSL --retry 5 -o jpeg.tar.gz https://github.com/libjpeg-turbo/libjpeg-turbo/releases/download/$JPEGTURBO_VERSION/libjpeg-turbo-$JPEGTURBO_VERSION.tar.gz
echo "$JPEGTURBO_SHA256  jpeg.tar.gz" | sha256sum -c -
tar xzf jpeg.tar.gz
cmake -S libjpeg-turbo-$JPEGTURBO_VERSION -B jpeg-build -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX=/usr/local -DCMAKE_INSTALL_LIBDIR=lib -DENABLE_STATIC=OFF -DWITH_TURBOJPEG=OFF -DREQUIRE_SIMD=ON -DCMAKE_POSITION_INDEPENDENT_CODE=ON
cmake --build jpeg-build -j$(nproc) --target install
# libpng, against the image's zlib (libz.so.1 is on the manylinux allow-list)
curl -fsSL --retry 5 -o png.tar.xz https://download.sourceforge.net/libpng/libpng-$LIBPNG_VERSION.tar.xz
echo "$LIBPNG_SHA256  png.tar.xz" | sha256sum -c -
tar xJf png.tar.xz
(cd libpng-$LIBPNG_VERSION && ./configure --prefix=/usr/local --disable-static && make -j$(nproc) install)
# OpenSSL 3.5 LTS, libraries only. OPENSSLDIR=/etc/ssl is only the fallback trust store:
# mx8 passes the machine's own bundle to libcurl (mx8/s3config.py, SYSTEM_CA_BUNDLES).
curl -fsSL --retry 5 -o openssl.tar.gz https://github.com/openssl/openssl/releases/download/openssl-$OPENSSL_VERSION/openssl-$OPENSSL_VERSION.tar.gz
echo "$OPENSSL_SHA256  openssl.tar.gz" | sha256sum -c -
tar xzf openssl.tar.gz
(cd openssl-$OPENSSL_VERSION && ./Configure --prefix=/usr/local --libdir=lib --openssldir=/etc/ssl shared no-tests && make -j$(nproc) build_libs && make install_dev)
ldconfig
# libcurl: HTTP(S) over that OpenSSL and nothing mx8 does not use (no LDAP, SSH, IDN, PSL,
# HTTP/2: mx8 asks for HTTP/1.1); no CA path compiled in, so OpenSSL's default store is used
curl -fsSL --retry 5 -o curl.tar.bz2 https://curl.se/download/curl-$CURL_VERSION.tar.bz2
echo "$CURL_SHA256  curl.tar.bz2" | sha256sum -c -
tar xjf curl.tar.bz2
(cd curl-$CURL_VERSION && ./configure --prefix=/usr/local --disable-static --with-openssl=/usr/local --with-zlib --enable-threaded-resolver --disable-ldap --disable-ldaps --without-libpsl --without-libidn2 --without-libssh2 --without-nghttp2 --without-brotli --without-zstd --disable-manual --disable-docs --without-ca-bundle --without-ca-path --with-ca-fallback && make -j$(nproc) install)
ldconfig
