// C++ exceptions (throw, typed catch, catch-all, rethrow) for the legacy-EH translation test; built by
// tests/test_transform_eh.py with em++ -fwasm-exceptions.
#include <stdexcept>
#include <cstdint>
struct Err { int code; };
static int depth_counter = 0;
__attribute__((noinline)) int may_throw(int x) {
  if (x % 7 == 3) throw Err{x};
  if (x % 11 == 5) throw std::runtime_error("boom");
  if (x % 13 == 6) throw x;
  return x * 2;
}
__attribute__((noinline)) int inner(int x) {
  try {
    return may_throw(x) + 1;
  } catch (const Err& e) {
    depth_counter++;
    if (e.code > 50) throw;  // rethrow
    return -e.code;
  }
}
extern "C" __attribute__((used, visibility("default"))) int run(int x) {
  int acc = 0;
  for (int i = 0; i < 4; i++) {
    try {
      acc += inner(x + i);
    } catch (const std::exception& e) {
      acc += 1000;
    } catch (int v) {
      acc += 100 * v;
    } catch (...) {
      acc += 7;
    }
  }
  return acc + depth_counter * 10000;
}
