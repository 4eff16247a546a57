// SPDX-License-Identifier: MIT
// examples::tensor: a small stand-in for a 1-D torch.Tensor, for the example programs only.
// It is NOT part of mpirpc's API; it exists so that the seed's examples (which add tensors
// and numbers on remote workers) can be written, and print, as they do in torch.
//
//     examples::tensor x = examples::ones(2);   // torch.ones(2)
//     examples::tensor y = x + x + 1;            // elementwise; numbers are added to every element
//     std::cout << y << '\n';                    // tensor([3., 3.])
//
// What it models, and where it differs from torch:
//  - 1-D only, elements are doubles (torch's default dtype is float32; see "Printing" below).
//  - `a + b` of two tensors is elementwise and needs equal sizes: torch would broadcast, this
//    throws std::invalid_argument with torch's wording ("The size of tensor a (2) must match the
//    size of tensor b (3) at non-singleton dimension 0"). `t + n` and `n + t` with a number
//    (int or double) add n to every element, as torch does.
//  - `a == b` is torch.equal(a, b): same size and equal elements (torch's `==` is elementwise
//    and returns a tensor of bools).
//  - mpirpc sends it through Boost.Serialization (the `serialize` member), so it can be an
//    argument or result of a remote function.
//
// Printing. operator<< and str() print what `print(t)` prints in torch for a 1-D float tensor
// with the default print options (precision 4, threshold 1000, edgeitems 3, linewidth 80),
// following torch/_tensor_str.py (_Formatter, _vector_str):
//  - the empty tensor is `tensor([])`;
//  - when every finite nonzero element is a whole number, elements print without decimals
//    and with a trailing point: `tensor([3., 3.])`, `tensor([0., -2., 10.])`;
//  - otherwise every element prints with 4 decimals: `tensor([1.5000, 2.0000])`;
//  - scientific notation with 4 decimals (`tensor([1.0000e-05, 1.0000e+00])`) when the largest
//    finite nonzero magnitude exceeds 1e8 or 1000 times the smallest one, or, for non-whole
//    values, when the smallest is below 1e-4;
//  - elements are right-aligned to a common width (`tensor([ 1., 10.])`); nan and inf print as
//    `nan`, `inf`, `-inf`; more than 1000 elements are summarized as the first and last 3 around
//    ` ...`; lines wrap after as many elements as fit in 80 columns, continuation lines indented
//    by 8 spaces.
// Torch formats float32 values widened to double; this type formats its doubles directly, so a
// value that float32 cannot represent (e.g. 1 + 1e-9, which float32 rounds to 1) can print
// differently. Whole numbers and 4-decimal values of float32-representable numbers (everything
// the examples use) print exactly as torch prints them.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdio>
#include <initializer_list>
#include <ostream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <boost/serialization/vector.hpp>

namespace examples {

/// A 1-D tensor of doubles (see the header comment). Value semantics; not thread-safe for
/// concurrent modification, like std::vector.
class tensor {
public:
  /// The empty tensor, `tensor([])`.
  tensor() = default;
  /// A tensor holding `values`, in order.
  explicit tensor(std::vector<double> values) : _values(std::move(values)) {}
  /// `tensor{1.5, 2.0}` is torch.tensor([1.5, 2.0]). Note that `tensor{3}` has one element,
  /// 3.0; use ones(n) for n ones.
  tensor(std::initializer_list<double> values) : _values(values) {}

  std::size_t size() const noexcept { return _values.size(); }
  bool empty() const noexcept { return _values.empty(); }
  const std::vector<double>& values() const noexcept { return _values; }
  /// Element i. Precondition: i < size() (checked: throws std::out_of_range).
  double operator[](std::size_t i) const { return _values.at(i); }

  /// Elementwise sum. Throws std::invalid_argument when the sizes differ (no broadcasting).
  friend tensor operator+(const tensor& a, const tensor& b) {
    if (a.size() != b.size()) {
      throw std::invalid_argument("The size of tensor a (" + std::to_string(a.size()) +
                                  ") must match the size of tensor b (" + std::to_string(b.size()) +
                                  ") at non-singleton dimension 0");
    }
    tensor sum(a._values);
    for (std::size_t i = 0; i < b.size(); ++i)
      sum._values[i] += b._values[i];
    return sum;
  }
  /// Adds the number `n` (an int converts) to every element.
  friend tensor operator+(const tensor& t, double n) {
    tensor sum(t._values);
    for (double& v : sum._values)
      v += n;
    return sum;
  }
  friend tensor operator+(double n, const tensor& t) { return t + n; }

  /// torch.equal: same size and equal elements (nan equals nothing, as in torch).
  friend bool operator==(const tensor& a, const tensor& b) { return a._values == b._values; }
  friend bool operator!=(const tensor& a, const tensor& b) { return !(a == b); }

  /// Boost.Serialization: what mpirpc uses to send a tensor (see mpirpc/serialization.hpp).
  template <class Archive> void serialize(Archive& archive, const unsigned int /*version*/) {
    archive& _values;
  }

  /// What torch's print(t) shows, e.g. `tensor([3., 3.])` (see the header comment).
  std::string str() const;

  friend std::ostream& operator<<(std::ostream& out, const tensor& t) { return out << t.str(); }

private:
  std::vector<double> _values;
};

/// torch.ones(n): n elements, all 1.
inline tensor ones(std::size_t n) {
  return tensor(std::vector<double>(n, 1.0));
}

namespace detail {

// torch's default print options (torch/_tensor_str.py, PRINT_OPTS).
inline constexpr int print_precision = 4;
inline constexpr std::size_t print_threshold = 1000;
inline constexpr std::size_t print_edgeitems = 3;
inline constexpr std::size_t print_linewidth = 80;

/// Python's "{:.<precision><conversion>}".format(v) for a finite v, or nan/inf/-inf as Python
/// prints them (printf would print "-nan" for a NaN with its sign bit set).
inline std::string format_number(double v, char conversion, int precision) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  const char format[] = {'%', '.', '*', conversion, '\0'};
  char buffer[512];
  std::snprintf(buffer, sizeof buffer, format, precision, v);
  return buffer;
}

/// torch's _Formatter for a floating-point tensor: chooses integer, fixed or scientific
/// notation and the common width from the finite nonzero elements of `shown`.
class formatter {
public:
  explicit formatter(const std::vector<double>& shown) {
    std::vector<double> nonzero_finite;
    for (double v : shown)
      if (std::isfinite(v) && v != 0) nonzero_finite.push_back(v);
    if (nonzero_finite.empty()) return; // whole-number mode, width 1
    double min_abs = std::fabs(nonzero_finite.front());
    double max_abs = min_abs;
    for (double v : nonzero_finite) {
      min_abs = std::fmin(min_abs, std::fabs(v));
      max_abs = std::fmax(max_abs, std::fabs(v));
      if (v != std::ceil(v)) _int_mode = false;
    }
    _sci_mode = max_abs / min_abs > 1000.0 || max_abs > 1.0e8 || (!_int_mode && min_abs < 1.0e-4);
    for (double v : nonzero_finite) {
      std::size_t width;
      if (_sci_mode) {
        width = format_number(v, 'e', print_precision).size();
      } else if (_int_mode) {
        width = format_number(v, 'f', 0).size() + 1; // the trailing '.'
      } else {
        width = format_number(v, 'f', print_precision).size();
      }
      if (width > _max_width) _max_width = width;
    }
  }

  std::size_t width() const noexcept { return _max_width; }

  /// One element, right-aligned to width().
  std::string format(double v) const {
    std::string s;
    if (_sci_mode) {
      s = format_number(v, 'e', print_precision);
    } else if (_int_mode) {
      s = format_number(v, 'f', 0);
      if (std::isfinite(v)) s += '.';
    } else {
      s = format_number(v, 'f', print_precision);
    }
    if (s.size() < _max_width) s.insert(0, _max_width - s.size(), ' ');
    return s;
  }

private:
  bool _int_mode = true;
  bool _sci_mode = false;
  std::size_t _max_width = 1;
};

} // namespace detail

inline std::string tensor::str() const {
  const std::string prefix = "tensor(";
  if (_values.empty()) return prefix + "[])";
  const std::size_t indent = prefix.size();

  // Summarization (torch's get_summarized_data / _vector_str): the first and last edgeitems
  // elements around " ...", formatted with a formatter of those elements only.
  const std::size_t n = _values.size();
  const bool summarize = n > detail::print_threshold && n > 2 * detail::print_edgeitems;
  std::vector<double> shown;
  if (summarize) {
    shown.assign(_values.begin(), _values.begin() + detail::print_edgeitems);
    shown.insert(shown.end(), _values.end() - detail::print_edgeitems, _values.end());
  } else {
    shown = _values;
  }
  const detail::formatter fmt(shown);
  std::vector<std::string> items;
  items.reserve(shown.size() + 1);
  for (std::size_t i = 0; i < shown.size(); ++i) {
    if (summarize && i == detail::print_edgeitems) items.emplace_back(" ...");
    items.push_back(fmt.format(shown[i]));
  }

  // Line wrapping: as many elements per line as fit in linewidth, counting ", " after each.
  const std::size_t element_length = fmt.width() + 2;
  std::size_t per_line = (detail::print_linewidth - indent) / element_length;
  if (per_line == 0) per_line = 1;
  std::string out = prefix + "[";
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (i > 0) out += (i % per_line == 0) ? ",\n" + std::string(indent + 1, ' ') : ", ";
    out += items[i];
  }
  return out + "])";
}

} // namespace examples
