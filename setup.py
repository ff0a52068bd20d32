"""Builds mx8._core, the C extension: csrc/core (pure C) + csrc/python (the binding).

System libraries are found with pkg-config; a missing one stops the build with the name of
the Debian package that provides it. MX8_WERROR=1 turns compiler warnings into errors (CI).
"""
import glob
import os
import shlex
import subprocess

from setuptools import Extension, setup

# pkg-config module -> Debian package that ships its .pc file and headers
SYSTEM_LIBS = {
    "libjpeg": "libjpeg62-turbo-dev",
    "libpng": "libpng-dev",
    "libcurl": "libcurl4-openssl-dev",
    "libcrypto": "libssl-dev",
}


def pkg_config(module, debian_pkg):
    try:
        out = subprocess.run(["pkg-config", "--cflags", "--libs", module], check=True,
                             capture_output=True, text=True).stdout
    except FileNotFoundError:
        raise SystemExit("mx8 build: pkg-config not found. Install it: apt-get install pkg-config")
    except subprocess.CalledProcessError:
        raise SystemExit(f"mx8 build: system library '{module}' not found by pkg-config. "
                         f"Install it: apt-get install {debian_pkg}")
    return shlex.split(out)


def core_extension():
    flags = []
    for module, pkg in SYSTEM_LIBS.items():
        flags += pkg_config(module, pkg)
    include_dirs = ["csrc/core", "csrc/python"] + [f[2:] for f in flags if f.startswith("-I")]
    library_dirs = [f[2:] for f in flags if f.startswith("-L")]
    libraries = [f[2:] for f in flags if f.startswith("-l")]
    extra_compile = ["-std=c11", "-D_GNU_SOURCE", "-O3", "-fvisibility=hidden",
                     "-Wall", "-Wextra", "-Wno-missing-field-initializers"]
    if os.environ.get("MX8_WERROR") == "1":
        extra_compile.append("-Werror")
    if os.environ.get("MX8_MARCH"):
        extra_compile.append("-march=" + os.environ["MX8_MARCH"])
    sources = sorted(glob.glob("csrc/core/*.c")) + sorted(glob.glob("csrc/python/*.c"))
    depends = sorted(glob.glob("csrc/core/*.h")) + sorted(glob.glob("csrc/python/*.h"))
    return Extension(
        "mx8._core",
        sources=sources,
        depends=depends,
        include_dirs=include_dirs,
        library_dirs=library_dirs,
        libraries=libraries + ["pthread"],
        extra_compile_args=extra_compile,
    )


setup(ext_modules=[core_extension()])
