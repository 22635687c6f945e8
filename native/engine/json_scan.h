// Just enough JSON to read the envelope handle() returns ({"ok":bool,"response":...}) without building a
// document: validates the text and reports byte spans, so the response bytes reach Python untouched.
#pragma once
#include <cstddef>
#include <string>

namespace aocu::engine {

struct Envelope {
  bool valid = false;
  std::string problem;       // why invalid
  bool ok = false;           // value of "ok"
  size_t resp_begin = 0, resp_end = 0;  // span of "response" in the input
  bool resp_is_string = false;
  std::string resp_string;   // decoded, when the response is a JSON string
  bool resp_has_error = false;          // response is an object with a non-null "Error"
  std::string error_text;    // decoded "Error" when it is a string, else its JSON text
  bool oom_output = false;   // Output (or Output.data) ends with "not enough memory for buffer allocation"
};

Envelope scan_envelope(const char* p, size_t n);

}  // namespace aocu::engine
