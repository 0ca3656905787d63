"""Build of fastrnn's compiled core.

Environment switches:
  FASTRNN_DEBUG=1        Cython bounds and initialisation checks on, -O0 -g
  FASTRNN_NO_OPENMP=1    build without OpenMP (single-threaded)
  FASTRNN_SANITIZE=1     AddressSanitizer and UndefinedBehaviorSanitizer (gcc, clang;
                         run with libasan preloaded: tools/sanitize.sh)
  FASTRNN_ARCH=...       native (the default): for the machine building it;
                         portable: for any CPU of the platform, plus, on
                         x86-64, two more builds of the kernels, for
                         x86-64-v3 (AVX2, FMA) and x86-64-v4 (AVX-512), the
                         widest the CPU runs chosen at import (the wheels);
                         none: no -march; anything else: the -march value
"""
import os
import platform
import sys
import tempfile
import textwrap

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

DEBUG = os.environ.get("FASTRNN_DEBUG", "") not in ("", "0")
NO_OPENMP = os.environ.get("FASTRNN_NO_OPENMP", "") not in ("", "0")
SANITIZE = os.environ.get("FASTRNN_SANITIZE", "") not in ("", "0")
ARCH = os.environ.get("FASTRNN_ARCH", "native")
X86_64 = platform.machine().lower() in ("x86_64", "amd64")
# flags for the extra builds of the kernels in a portable build (module
# fastrnn._recurrence_<variant>), by compiler: the first accepted
VARIANT_FLAGS = {
    "avx2": {"msvc": [["/arch:AVX2"]], "unix": [["-march=x86-64-v3"], ["-march=haswell"]]},
    "avx512": {"msvc": [["/arch:AVX512"]], "unix": [["-march=x86-64-v4"], ["-march=skylake-avx512"]]},
}

# Cython directives, all in one place.
DIRECTIVES = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": False,
    "initializedcheck": DEBUG,
    "cdivision": True,
    "embedsignature": True,
}


def compiler_accepts(compiler, flags, source="int main(void) { return 0; }\n", link=True):
    """Whether the compiler builds (and links) a small program with these flags."""
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write(source)
        try:
            objects = compiler.compile([src], output_dir=tmp, extra_postargs=flags)
            if link:
                compiler.link_executable(objects, os.path.join(tmp, "probe"), extra_postargs=flags)
        except Exception:
            return False
    return True


OPENMP_PROBE = textwrap.dedent("""
    #include <omp.h>
    int main(void) {
        int n = 0;
        #pragma omp parallel reduction(+:n)
        n += 1;
        return n > 0 ? 0 : 1;
    }
""")


class BuildExt(build_ext):
    def run(self):
        self._in_place = bool(self.inplace or getattr(self, "editable_mode", False))
        super().run()

    def build_extensions(self):
        compiler = self.compiler
        is_msvc = compiler.compiler_type == "msvc"
        sanitize_link: list[str] = []
        if is_msvc:
            cflags = ["/O2", "/fp:precise"]
            omp_compile, omp_link = ["/openmp"], []
        else:
            cflags = ["-O0", "-g"] if DEBUG else ["-O3"]
            # no trapping math: lets the compiler if-convert (so vectorise) the
            # selects of the activations; no errno: math calls have no side effect
            cflags += ["-fno-trapping-math", "-fno-math-errno", "-Wno-unused-function"]
            if compiler_accepts(compiler, ["--param", "vect-max-version-for-alias-checks=256"], link=False):
                # the pointwise loops read and write several rows through pointers:
                # let gcc check them for overlap at run time and vectorise
                cflags += ["--param", "vect-max-version-for-alias-checks=256"]
            if ARCH not in ("", "none", "portable") and compiler_accepts(compiler, [f"-march={ARCH}"], link=False):
                cflags.append(f"-march={ARCH}")
            if compiler_accepts(compiler, ["-mprefer-vector-width=512"], link=False):
                # where the target has AVX-512, the pointwise loops in 64-byte
                # vectors, as the products' kernels already are (gcc's tuning
                # for Intel's AVX-512 cores and for x86-64-v4 prefers 32 bytes);
                # measured on a Sapphire Rapids VM, forward, 2 threads: 1.10-1.12x
                # at B=8, H=128 (LSTM, GRU), 1.03-1.05x at B=32, 1.02-1.03x at B=1,
                # large sizes unchanged
                cflags.append("-mprefer-vector-width=512")
            if SANITIZE:   # every error is fatal, so that a run with no report is a clean run
                sanitize = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer"]
                cflags += sanitize + ["-g"]
                sanitize_link = sanitize
            omp_compile, omp_link = ["-fopenmp"], ["-fopenmp"]
            if sys.platform == "darwin":
                omp_compile, omp_link = ["-Xpreprocessor", "-fopenmp"], ["-lomp"]

        use_openmp = not NO_OPENMP and compiler_accepts(compiler, omp_compile + omp_link, OPENMP_PROBE)
        if not use_openmp:
            banner = "*" * 78
            reason = "FASTRNN_NO_OPENMP is set" if NO_OPENMP else "the compiler has no working OpenMP"
            self.warn(f"\n{banner}\nfastrnn: building WITHOUT OpenMP ({reason}).\n"
                      f"The kernels will run on ONE thread.\n{banner}")
            omp_compile = omp_link = []

        build_info = {
            "compiler": " ".join(compiler.compiler_so[:1]) if hasattr(compiler, "compiler_so") else compiler.compiler_type,
            "cflags": " ".join(cflags + omp_compile),
            "openmp": use_openmp,
            "debug": DEBUG,
            "sanitize": SANITIZE,
            "arch": ARCH,
        }
        variant_flags = {}
        for variant, by_compiler in VARIANT_FLAGS.items():
            if not any(ext.name.endswith(f"_{variant}") for ext in self.extensions):
                continue
            candidates = by_compiler["msvc" if is_msvc else "unix"]
            flags = next((f for f in candidates if compiler_accepts(compiler, f, link=False)), None)
            if flags is None:
                raise RuntimeError(f"the compiler accepts none of {candidates} for the {variant} build of the kernels")
            variant_flags[variant] = flags
            build_info[f"cflags_{variant}"] = " ".join(cflags + flags + omp_compile)
        # next to the compiled module: in the build tree, and in the sources
        # for an in-place build (setuptools builds in the tree, then copies)
        package_dirs = {os.path.dirname(self.get_ext_fullpath("fastrnn._recurrence"))}
        if self._in_place:
            package_dirs.add(os.path.join(os.path.dirname(os.path.abspath(__file__)), "fastrnn"))
        for package_dir in package_dirs:
            os.makedirs(package_dir, exist_ok=True)
            with open(os.path.join(package_dir, "_build_info.py"), "w") as f:
                f.write("# Written by setup.py at build time.\n")
                f.write(f"BUILD_INFO = {build_info!r}\n")
        for ext in self.extensions:
            extra = next((f for v, f in variant_flags.items() if ext.name.endswith(f"_{v}")), [])
            ext.extra_compile_args = cflags + extra + omp_compile
            ext.extra_link_args = omp_link + sanitize_link
        super().build_extensions()


def extensions():
    from Cython.Build import cythonize

    here = os.path.dirname(os.path.abspath(__file__))
    names = ["_recurrence"] + ([f"_recurrence_{v}" for v in VARIANT_FLAGS] if ARCH == "portable" and X86_64 else [])
    depends = [os.path.join("csrc", name) for name in sorted(os.listdir(os.path.join(here, "csrc")))] + [
        os.path.join("fastrnn", name) for name in ("_common.pxd", "_cells.pxd", "_recurrence.pyx")]
    exts = [Extension(f"fastrnn.{name}", sources=[os.path.join("fastrnn", f"{name}.pyx")],
                      include_dirs=[os.path.join(here, "csrc")], depends=depends) for name in names]
    return cythonize(exts, compiler_directives=DIRECTIVES, include_path=[here],
                     annotate=os.environ.get("FASTRNN_ANNOTATE") == "1")


setup(ext_modules=extensions(), cmdclass={"build_ext": BuildExt})
