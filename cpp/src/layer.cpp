#include "neuralpower/layer.hpp"
#include "neuralpower/row_cache.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <initializer_list>

namespace neuralpower {

namespace {

// Every size is capped so that no product of a layer's sizes can overflow int64 unnoticed; the
// arithmetic below is checked as well, because products of several capped values still can.
constexpr std::int64_t kMaxSize = std::int64_t{1} << 24;

using T = LayerType;

struct Checked {
    bool overflow = false;
    std::int64_t mul(std::int64_t a, std::int64_t b) {
        std::int64_t r = 0;
        if (__builtin_mul_overflow(a, b, &r)) overflow = true;
        return r;
    }
    std::int64_t mul(std::int64_t a, std::int64_t b, std::int64_t c) { return mul(mul(a, b), c); }
    std::int64_t mul(std::int64_t a, std::int64_t b, std::int64_t c, std::int64_t d) {
        return mul(mul(a, b), mul(c, d));
    }
    std::int64_t add(std::int64_t a, std::int64_t b) {
        std::int64_t r = 0;
        if (__builtin_add_overflow(a, b, &r)) overflow = true;
        return r;
    }
};

bool is_pool(T t) { return t == T::MaxPool2d || t == T::AvgPool2d; }

// FLOPs per element of the element-wise layers; a convention (documented in the README), counting one
// FLOP per arithmetic operation or comparison of a straightforward implementation.
std::int64_t flops_per_element(T t) {
    switch (t) {
        case T::ReLU: return 1;         // max(x, 0)
        case T::ReLU6: return 2;        // min(max(x, 0), 6)
        case T::Sigmoid: return 4;      // 1 / (1 + exp(-x))
        case T::Tanh: return 5;         // (e^2x - 1) / (e^2x + 1)
        case T::HardSigmoid: return 4;  // min(max(x + 3, 0), 6) / 6
        case T::SiLU: return 5;         // x * sigmoid(x)
        case T::HardSwish: return 5;    // x * hardsigmoid(x)
        case T::GELU: return 8;         // 0.5 x (1 + erf(x / sqrt 2)); the tanh form counts 9 (see below)
        case T::BatchNorm2d: return 2;  // folded scale and shift
        case T::Softmax: return 5;      // max, subtract, exp, sum, divide
        case T::LayerNorm: return 8;    // mean (1), variance (3), normalize (2), scale and shift (2)
        default: return 0;
    }
}

// The PyTorch output-size formula of convolution and pooling along one axis (0 or less: does not fit).
std::int64_t window_out(std::int64_t in, std::int64_t k, std::int64_t s, std::int64_t p, std::int64_t d,
                        bool ceil_mode) {
    // PyTorch's pooling_output_shape: rounds toward negative infinity, so in ceil mode a window may
    // overhang the padded input by up to stride - 1 and still produce an output.
    const std::int64_t span = in + 2 * p - d * (k - 1) - 1 + (ceil_mode ? s - 1 : 0);
    if (span < 0) return 0;
    std::int64_t out = span / s + 1;
    // ... but the last window must start inside the input or its left padding.
    if (ceil_mode && (out - 1) * s >= in + p) --out;
    return out;
}

// Input elements summed by an adaptive average pool along one axis (PyTorch's window bounds: output i reads
// [floor(i in / out), ceil((i + 1) in / out))). The sum of those window lengths has a closed form,
// in + out - gcd(in, out) (sum the ceilings and floors with the reciprocity of floor sums), so a layer's cost
// takes constant time however large its output (a loop over 16M outputs took 20 ms a row).
std::int64_t adaptive_window_sum(std::int64_t in, std::int64_t out) {
    return in + out - std::gcd(in, out);
}

// Query-key pairs that attention scores: every pair, or with a causal mask (PyTorch's is_causal, aligned to
// the top left: query i sees keys 0..i) sum over queries of min(i + 1, kv). A sliding window (window > 0) caps
// each query's keys at window: min(kv, window) without the mask, min(i + 1, kv, window) with it.
std::int64_t attention_pairs(std::int64_t q, std::int64_t kv, bool causal, std::int64_t window, Checked& c) {
    const std::int64_t seen = window > 0 ? std::min(kv, window) : kv;  // the most keys one query sees
    if (!causal) return c.mul(q, seen);
    const std::int64_t full = std::min(q, seen);  // queries 0..full-1 see i + 1 keys, the rest see `seen`
    return c.add(c.mul(full, full + 1) / 2, c.mul(q - full, seen));
}

// The PyTorch output size of a transposed convolution along one axis.
std::int64_t transposed_out(std::int64_t in, std::int64_t k, std::int64_t s, std::int64_t p, std::int64_t d,
                            std::int64_t op) {
    return (in - 1) * s - 2 * p + d * (k - 1) + op + 1;
}

bool is_conv(T t) { return t == T::Conv2d || t == T::ConvTranspose2d; }

std::vector<int> fields_of(T t) {
    std::vector<int> f = {kType, kBatch, kDType};
    const std::initializer_list<int> spatial = {kInChannels, kInH, kInW};
    switch (t) {
        case T::Conv2d:
        case T::ConvTranspose2d:
            f.insert(f.end(), spatial);
            f.insert(f.end(), {kOutChannels, kKernelH, kKernelW, kStrideH, kStrideW, kPadH, kPadW,
                               kDilationH, kDilationW, kGroups, kBias});
            if (t == T::ConvTranspose2d) f.insert(f.end(), {kOutputPaddingH, kOutputPaddingW});
            break;
        case T::Linear:
            f.insert(f.end(), {kInFeatures, kOutFeatures, kBias, kTokens});
            break;
        case T::LayerNorm:
            f.insert(f.end(), {kInFeatures, kTokens, kChannelsFirst});
            break;
        case T::MatMul:
            f.insert(f.end(), {kHeads, kTokens, kInFeatures, kOutFeatures, kBroadcast});
            break;
        case T::Softmax:
            f.insert(f.end(), spatial);
            f.push_back(kChannelsFirst);
            break;
        case T::Attention:
            f.insert(f.end(), {kHeads, kTokens, kKvTokens, kHeadDim, kCausal, kKvHeads, kWindow, kKvDType});
            break;
        case T::Embedding:
            f.insert(f.end(), {kTokens, kInFeatures, kOutFeatures});
            break;
        case T::GELU:
            f.insert(f.end(), spatial);
            f.push_back(kApproximate);
            break;
        case T::Upsample:
            f.insert(f.end(), spatial);
            f.insert(f.end(), {kOutH, kOutW, kInterpolation});
            break;
        case T::MaxPool2d:
            f.insert(f.end(), spatial);
            f.insert(f.end(),
                     {kKernelH, kKernelW, kStrideH, kStrideW, kPadH, kPadW, kDilationH, kDilationW, kCeilMode});
            break;
        case T::AvgPool2d:
            f.insert(f.end(), spatial);
            f.insert(f.end(), {kKernelH, kKernelW, kStrideH, kStrideW, kPadH, kPadW, kCeilMode});
            break;
        case T::AdaptiveAvgPool2d:
            f.insert(f.end(), spatial);
            f.insert(f.end(), {kOutH, kOutW});
            break;
        case T::Add:
        case T::Mul:
            f.insert(f.end(), spatial);
            f.insert(f.end(), {kInputs, kBroadcast});
            break;
        case T::Concat:
            f.insert(f.end(), spatial);
            f.push_back(kInputs);
            break;
        case T::ChannelShuffle:
            f.insert(f.end(), spatial);
            f.push_back(kGroups);
            break;
        default:  // batchnorm, activations, softmax, flatten
            f.insert(f.end(), spatial);
            break;
    }
    return f;
}

std::vector<int> required_of(T t) {
    switch (t) {
        case T::Conv2d:
        case T::ConvTranspose2d: return {kInChannels, kInH, kInW, kOutChannels, kKernelH, kKernelW};
        case T::Linear:
        case T::MatMul:
        case T::Embedding: return {kInFeatures, kOutFeatures};
        case T::LayerNorm: return {kInFeatures};
        case T::Attention: return {kHeads, kTokens, kHeadDim};
        case T::Upsample: return {kInChannels, kInH, kInW, kOutH, kOutW};
        case T::MaxPool2d:
        case T::AvgPool2d: return {kInChannels, kInH, kInW, kKernelH, kKernelW};
        case T::AdaptiveAvgPool2d: return {kInChannels, kInH, kInW};
        default: return {kInChannels};  // a 1 x 1 spatial size is the default (vectors, e.g. after linear)
    }
}

std::vector<int> features_of(T t) {
    // A GEMM, a row-wise normalization or a lookup costs what its rows cost, however they split into
    // batch and tokens: those types use rows in place of the batch.
    const bool by_rows = t == T::Linear || t == T::LayerNorm || t == T::Embedding || t == T::Softmax;
    std::vector<int> f = {by_rows ? kFRows : kFBatch};
    switch (t) {
        case T::Conv2d:
        case T::ConvTranspose2d:
            f.insert(f.end(), {kFInChannels, kFInH, kFOutChannels, kFOutH, kFKernelH, kFStrideH, kFPadH,
                               kFGroups});
            break;
        case T::LayerNorm:
            f.insert(f.end(), {kFInFeatures, kFChannelsFirst});
            break;
        case T::MatMul:
            f.insert(f.end(), {kFHeads, kFTokens, kFInFeatures, kFOutFeatures});
            break;
        case T::Embedding:
            f.insert(f.end(), {kFInFeatures, kFOutFeatures});
            break;
        case T::Softmax:
            f.insert(f.end(), {kFInChannels, kFChannelsFirst});
            break;
        case T::Attention:
            f.insert(f.end(), {kFHeads, kFTokens, kFKvTokens, kFHeadDim, kFCausal, kFKvHeads, kFWindow,
                               kFKvDTypeBytes});
            break;
        case T::Upsample:
            f.insert(f.end(), {kFInChannels, kFInH, kFOutH, kFInterpolation});
            break;
        case T::GELU:
            f.insert(f.end(), {kFInChannels, kFInH, kFApproximate});
            break;
        case T::Linear:
            f.insert(f.end(), {kFInFeatures, kFOutFeatures});
            break;
        case T::MaxPool2d:
        case T::AvgPool2d:
            f.insert(f.end(), {kFInChannels, kFInH, kFOutH, kFKernelH, kFStrideH});
            break;
        case T::AdaptiveAvgPool2d:
            f.insert(f.end(), {kFInChannels, kFInH, kFOutH});
            break;
        case T::Add:
        case T::Mul:
        case T::Concat:
            f.insert(f.end(), {kFInChannels, kFInH, kFInputs});
            break;
        default:
            f.insert(f.end(), {kFInChannels, kFInH});
            break;
    }
    f.insert(f.end(), {kFFlops, kFBytesMoved});
    return f;
}

template <typename F>
std::array<std::vector<int>, kNumLayerTypes> per_type(F make) {
    std::array<std::vector<int>, kNumLayerTypes> out;
    for (int i = 0; i < kNumLayerTypes; ++i) out[i] = make(static_cast<T>(i));
    return out;
}

std::int64_t default_value(const std::int64_t* row, int field) {
    const T t = static_cast<T>(row[kType]);
    switch (field) {
        case kBatch: return 1;
        case kDType: return static_cast<std::int64_t>(DType::FP32);
        case kInH:
        case kInW:
        case kOutH:
        case kOutW:
        case kDilationH:
        case kDilationW:
        case kGroups: return t == T::ChannelShuffle ? 2 : 1;
        case kBias: return 1;
        case kTokens:
        case kHeads: return 1;  // matmul: no heads dimension
        case kChannelsFirst: return t == T::Softmax ? 1 : 0;  // softmax over dim 1 of N x C x H x W, as before
        case kKvTokens: return row[kTokens];  // read in the second pass, after tokens
        case kKvHeads: return row[kHeads];    // second pass, after heads
        case kKvDType: return row[kDType];    // second pass, after dtype
        case kStrideH:  // PyTorch's pooling layers default their stride to the kernel size
            return is_pool(t) ? row[kKernelH] : 1;
        case kStrideW: return is_pool(t) ? row[kKernelW] : 1;
        case kInputs: return 2;
        default: return 0;  // padding, ceil_mode, broadcast, flags, output padding
    }
}

std::int64_t min_value(int field) {
    switch (field) {
        case kPadH:
        case kPadW:
        case kBias:
        case kCeilMode:
        case kBroadcast:
        case kCausal:
        case kApproximate:
        case kInterpolation:
        case kOutputPaddingH:
        case kOutputPaddingW:
        case kChannelsFirst:
        case kWindow: return 0;
        case kInputs: return 2;
        default: return 1;
    }
}

std::int64_t max_value(int field) {
    switch (field) {
        case kBias:
        case kCeilMode:
        case kBroadcast:
        case kCausal:
        case kApproximate:
        case kInterpolation:
        case kChannelsFirst: return 1;
        default: return kMaxSize;
    }
}

std::string type_name(T t) { return type_names()[static_cast<int>(t)]; }

ValidationError error(int field, std::string message) { return ValidationError{field, std::move(message)}; }

// Computes the info of a row whose fields are in range; sets overflow when a count does not fit.
InfoRow info_checked(const std::int64_t* r, Checked& c) {
    InfoRow info{};
    const T t = static_cast<T>(r[kType]);
    const std::int64_t b = dtype_bytes(static_cast<DType>(r[kDType]));
    const std::int64_t n = r[kBatch];
    const std::int64_t cin = r[kInChannels], h = r[kInH], w = r[kInW];
    std::int64_t oc = cin, oh = h, ow = w, rank = 4;
    std::int64_t macs = 0, flops = 0, params = 0, weight_bytes = 0;
    std::int64_t in_elems = c.mul(n, cin, h, w);
    std::int64_t in_bytes = -1;  // set where the operands differ in dtype (attention's K and V), else in_elems x b

    switch (t) {
        case T::Conv2d: {
            oc = r[kOutChannels];
            oh = window_out(h, r[kKernelH], r[kStrideH], r[kPadH], r[kDilationH], false);
            ow = window_out(w, r[kKernelW], r[kStrideW], r[kPadW], r[kDilationW], false);
            const std::int64_t per_out = c.mul(cin / r[kGroups], r[kKernelH], r[kKernelW]);
            const std::int64_t outs = c.mul(n, oc, oh, ow);
            macs = c.mul(outs, per_out);
            flops = c.add(c.mul(2, macs), r[kBias] ? outs : 0);
            params = c.add(c.mul(oc, per_out), r[kBias] ? oc : 0);
            weight_bytes = c.mul(params, b);
            break;
        }
        case T::ConvTranspose2d: {
            oc = r[kOutChannels];
            oh = transposed_out(h, r[kKernelH], r[kStrideH], r[kPadH], r[kDilationH], r[kOutputPaddingH]);
            ow = transposed_out(w, r[kKernelW], r[kStrideW], r[kPadW], r[kDilationW], r[kOutputPaddingW]);
            // every input element meets (out / groups) x kernel weights
            const std::int64_t per_in = c.mul(oc / r[kGroups], r[kKernelH], r[kKernelW]);
            macs = c.mul(in_elems, per_in);
            flops = c.add(c.mul(2, macs), r[kBias] ? c.mul(n, oc, std::max<std::int64_t>(oh, 0),
                                                           std::max<std::int64_t>(ow, 0))
                                                     : 0);
            params = c.add(c.mul(cin, per_in), r[kBias] ? oc : 0);
            weight_bytes = c.mul(params, b);
            break;
        }
        case T::Linear: {
            const std::int64_t rows = c.mul(n, r[kTokens]);
            oc = r[kOutFeatures];
            oh = r[kTokens];
            ow = 1;
            rank = r[kTokens] > 1 ? 3 : 2;
            in_elems = c.mul(rows, r[kInFeatures]);
            macs = c.mul(rows, r[kInFeatures], oc);
            flops = c.add(c.mul(2, macs), r[kBias] ? c.mul(rows, oc) : 0);
            params = c.add(c.mul(r[kInFeatures], oc), r[kBias] ? oc : 0);
            weight_bytes = c.mul(params, b);
            break;
        }
        case T::LayerNorm: {
            oc = r[kInFeatures];
            oh = r[kTokens];
            ow = 1;
            rank = 3;
            in_elems = c.mul(n, r[kTokens], oc);
            params = c.mul(2, oc);  // weight and bias
            weight_bytes = c.mul(params, b);
            flops = c.mul(in_elems, flops_per_element(t));
            break;
        }
        case T::MatMul: {
            const std::int64_t m = r[kTokens], k = r[kInFeatures], nb = c.mul(n, r[kHeads]);
            if (r[kHeads] > 1) {  // N x heads x tokens x out_features
                oc = r[kHeads];
                oh = m;
                ow = r[kOutFeatures];
            } else {  // N x tokens x out_features
                oc = r[kOutFeatures];
                oh = m;
                ow = 1;
                rank = 3;
            }
            in_elems = c.add(c.mul(nb, m, k), c.mul(r[kBroadcast] ? 1 : nb, k, r[kOutFeatures]));
            macs = c.mul(c.mul(nb, m), c.mul(k, r[kOutFeatures]));
            flops = c.mul(2, macs);
            break;
        }
        case T::Attention: {
            const std::int64_t heads = r[kHeads], q = r[kTokens], kv = r[kKvTokens], d = r[kHeadDim];
            oc = heads;  // the output is N x heads x tokens x head_dim, as PyTorch's SDPA returns it
            oh = q;
            ow = d;
            const std::int64_t q_elems = c.mul(c.mul(n, heads, d), q);
            const std::int64_t kv_elems = c.mul(c.mul(n, r[kKvHeads], d), c.mul(2, kv));  // K and V
            in_elems = c.add(q_elems, kv_elems);
            in_bytes = c.add(c.mul(q_elems, b), c.mul(kv_elems, dtype_bytes(static_cast<DType>(r[kKvDType]))));
            const std::int64_t scores =
                c.mul(c.mul(n, heads), attention_pairs(q, kv, r[kCausal] != 0, r[kWindow], c));
            macs = c.mul(2, c.mul(scores, d));  // Q K^T and the weighted sum of V
            // the products, the scaling and the softmax (5 per score, as the softmax layer)
            flops = c.add(c.mul(2, macs), c.mul(6, scores));
            break;
        }
        case T::Embedding: {
            oc = r[kOutFeatures];
            oh = r[kTokens];
            ow = 1;
            rank = 3;
            const std::int64_t rows = c.mul(n, r[kTokens]);
            in_elems = 0;  // the indices, counted below as 8-byte integers
            params = c.mul(r[kInFeatures], oc);
            weight_bytes = c.mul(c.mul(rows, oc), b);  // the rows looked up, not the whole table
            break;
        }
        case T::Upsample:
            oh = r[kOutH];
            ow = r[kOutW];
            // bilinear: 4 products and 3 sums per output element; nearest copies
            flops = r[kInterpolation] ? c.mul(7, c.mul(n, cin, oh, ow)) : 0;
            break;
        case T::GELU:
            flops = c.mul(in_elems, r[kApproximate] ? 9 : 8);  // tanh form: 0.5 x (1 + tanh(a (x + b x^3)))
            break;
        case T::MaxPool2d:
        case T::AvgPool2d: {
            const bool ceil_mode = r[kCeilMode] != 0;
            const std::int64_t dh = t == T::MaxPool2d ? r[kDilationH] : 1;
            const std::int64_t dw = t == T::MaxPool2d ? r[kDilationW] : 1;
            oh = window_out(h, r[kKernelH], r[kStrideH], r[kPadH], dh, ceil_mode);
            ow = window_out(w, r[kKernelW], r[kStrideW], r[kPadW], dw, ceil_mode);
            // one comparison or addition per window element, the average's division counted for the sum
            flops = c.mul(c.mul(n, cin, oh, ow), c.mul(r[kKernelH], r[kKernelW]));
            break;
        }
        case T::AdaptiveAvgPool2d: {
            oh = r[kOutH];
            ow = r[kOutW];
            const std::int64_t window = c.mul(adaptive_window_sum(h, oh), adaptive_window_sum(w, ow));
            flops = c.mul(n, cin, window);
            break;
        }
        case T::BatchNorm2d:
            params = 2 * cin;  // affine weight and bias; running mean and variance are buffers
            weight_bytes = c.mul(4 * cin, b);  // inference reads weight, bias, mean and variance
            flops = c.mul(in_elems, flops_per_element(t));
            break;
        case T::Add:
        case T::Mul: {
            const std::int64_t others = r[kBroadcast] ? c.mul(n, cin) : in_elems;
            const std::int64_t k = r[kInputs];
            flops = c.mul(k - 1, c.mul(n, cin, h, w));
            in_elems = c.add(in_elems, c.mul(k - 1, others));
            break;
        }
        case T::Concat:  // in_channels is the total of the inputs: a pure copy
        case T::ChannelShuffle:
            break;
        case T::Flatten:
            oc = c.mul(cin, h, w);
            oh = ow = 1;
            rank = 2;
            break;
        default:  // activations, softmax
            flops = c.mul(in_elems, flops_per_element(t));
            break;
    }

    const std::int64_t out_elems = c.mul(n, oc, oh, ow);
    info[kInfoOutChannels] = oc;
    info[kInfoOutH] = oh;
    info[kInfoOutW] = ow;
    info[kInfoOutRank] = rank;
    info[kInfoMacs] = macs;
    info[kInfoFlops] = flops;
    info[kInfoParams] = params;
    // Flatten is a view: it moves nothing.
    info[kInfoBytesInput] = t == T::Flatten     ? 0
                            : t == T::Embedding ? c.mul(8, c.mul(n, r[kTokens]))  // int64 indices
                            : in_bytes >= 0     ? in_bytes
                                                : c.mul(in_elems, b);
    info[kInfoBytesWeights] = weight_bytes;
    info[kInfoBytesOutput] = t == T::Flatten ? 0 : c.mul(out_elems, b);
    c.add(c.add(info[kInfoBytesInput], info[kInfoBytesOutput]), weight_bytes);  // bytes_moved must fit too
    return info;
}

// Padding and kernel size against the input. In ceil mode a pooling window may overhang the padded input
// (PyTorch allows it as long as there is an output), so only the output size is checked then.
ValidationError check_window(const std::int64_t* r, bool dilated, bool pooling, bool ceil_mode = false) {
    const char* axis[2] = {"in_h", "in_w"};
    const int in[2] = {kInH, kInW}, k[2] = {kKernelH, kKernelW}, p[2] = {kPadH, kPadW},
              d[2] = {kDilationH, kDilationW};
    for (int a = 0; a < 2; ++a) {
        const std::int64_t dil = dilated ? r[d[a]] : 1;
        const std::int64_t eff = dil * (r[k[a]] - 1) + 1;
        if (pooling && 2 * r[p[a]] > r[k[a]])
            return error(p[a], "padding " + std::to_string(r[p[a]]) + " is more than half the kernel " +
                                   std::to_string(r[k[a]]));
        if (!ceil_mode && eff > r[in[a]] + 2 * r[p[a]])
            return error(k[a], "kernel " + std::to_string(r[k[a]]) +
                                   (dil > 1 ? " (" + std::to_string(eff) + " dilated)" : std::string()) +
                                   " is larger than the padded input (" + axis[a] + " " +
                                   std::to_string(r[in[a]]) + " + 2 x padding " + std::to_string(r[p[a]]) + ")");
    }
    return {};
}

}  // namespace

const std::array<const char*, kNumFields>& field_names() {
    static const std::array<const char*, kNumFields> names = {
        "type",     "batch",    "dtype",      "in_channels", "in_h",        "in_w",         "out_channels",
        "out_h",    "out_w",    "kernel_h",   "kernel_w",    "stride_h",    "stride_w",     "padding_h",
        "padding_w", "dilation_h", "dilation_w", "groups",   "in_features", "out_features", "bias",
        "ceil_mode", "inputs",  "broadcast", "tokens",      "heads",       "kv_tokens",    "head_dim",
        "causal",   "approximate", "interpolation", "output_padding_h", "output_padding_w", "channels_first",
        "kv_heads", "window",   "kv_dtype"};
    return names;
}

const std::array<const char*, kNumLayerTypes>& type_names() {
    static const std::array<const char*, kNumLayerTypes> names = {
        "conv2d",  "linear",      "maxpool2d", "avgpool2d", "adaptive_avgpool2d", "batchnorm2d",
        "relu",    "relu6",       "sigmoid",   "hardsigmoid", "silu",             "hardswish",
        "gelu",    "add",         "mul",       "concat",    "softmax",            "flatten",
        "channel_shuffle", "layernorm", "matmul", "attention", "embedding", "upsample", "conv_transpose2d",
        "tanh"};
    return names;
}

const std::array<const char*, kNumDTypes>& dtype_names() {
    static const std::array<const char*, kNumDTypes> names = {"fp32", "fp16", "bf16", "fp8"};
    return names;
}

const std::array<const char*, kNumInfo>& info_names() {
    static const std::array<const char*, kNumInfo> names = {
        "out_channels", "out_h",  "out_w",       "out_rank",      "macs",
        "flops",        "params", "bytes_input", "bytes_weights", "bytes_output"};
    return names;
}

const std::array<const char*, kNumFeatures>& feature_names() {
    static const std::array<const char*, kNumFeatures> names = {
        "batch",       "in_channels",   "in_h",         "in_w",        "out_channels", "out_h",
        "out_w",       "kernel_h",      "kernel_w",     "stride_h",    "stride_w",     "padding_h",
        "padding_w",   "dilation_h",    "dilation_w",   "groups",      "in_features",  "out_features",
        "inputs",      "dtype_bytes",   "macs",         "flops",       "params",       "bytes_input",
        "bytes_weights", "bytes_output", "bytes_moved", "elements_in", "elements_out", "tokens",
        "heads",       "kv_tokens",     "head_dim",     "causal",      "approximate",  "interpolation",
        "output_padding_h", "output_padding_w", "channels_first", "rows", "gemm_m",
        "gemm_n",      "gemm_k",        "tile_flops_128x128", "tile_flops_128x64", "tile_flops_64x64",
        "tile_flops_128x32", "tile_flops_64x128", "tile_flops_32x128", "kv_heads", "window", "kv_dtype_bytes",
        "tiles_128x128", "tiles_128x256", "tiles_64x128", "attn_ctas_64", "attn_ctas_128", "batch_heads",
        "batch_kv_heads"};
    return names;
}

const std::vector<int>& type_features(LayerType t) {
    static const auto table = per_type(features_of);
    return table[static_cast<int>(t)];
}

const std::vector<int>& type_fields(LayerType t) {
    static const auto table = per_type(fields_of);
    return table[static_cast<int>(t)];
}

const std::vector<int>& type_required_fields(LayerType t) {
    static const auto table = per_type(required_of);
    return table[static_cast<int>(t)];
}

int dtype_bytes(DType d) {
    switch (d) {
        case DType::FP32: return 4;
        case DType::FP8: return 1;
        default: return 2;  // fp16, bf16
    }
}

ValidationError normalize(std::int64_t* row) {
    if (row[kType] < 0 || row[kType] >= kNumLayerTypes)
        return error(kType, row[kType] == kMissing ? "is required" : "unknown layer type code " +
                                                                         std::to_string(row[kType]));
    const T t = static_cast<T>(row[kType]);
    const auto& used = type_fields(t);
    for (int f : type_required_fields(t))
        if (row[f] == kMissing) return error(f, std::string("is required for ") + type_name(t) + " layers");
    LayerRow out{};
    // Kernel, tokens, heads and dtype first: the pooling stride and attention's kv_tokens, kv_heads and kv_dtype
    // default to them.
    for (int pass = 0; pass < 2; ++pass)
        for (int f : used) {
            const bool second = f == kStrideH || f == kStrideW || f == kKvTokens || f == kKvHeads || f == kKvDType;
            if ((pass == 0) == second) continue;
            out[f] = row[f] == kMissing ? default_value(out.data(), f) : row[f];
        }
    std::copy(out.begin(), out.end(), row);
    return {};
}

ValidationError validate(const std::int64_t* r) { return validate(r, nullptr); }

ValidationError validate(const std::int64_t* r, InfoRow* info_out) {
    if (r[kType] < 0 || r[kType] >= kNumLayerTypes)
        return error(kType, "unknown layer type code " + std::to_string(r[kType]));
    const T t = static_cast<T>(r[kType]);
    if (r[kDType] < 0 || r[kDType] >= kNumDTypes)
        return error(kDType, "unknown dtype code " + std::to_string(r[kDType]));
    for (int f : type_fields(t)) {
        if (f == kType || f == kDType) continue;
        if (f == kKvDType) {  // a dtype code, as dtype is
            if (r[f] < 0 || r[f] >= kNumDTypes) return error(f, "unknown dtype code " + std::to_string(r[f]));
            continue;
        }
        // torch.cat of a single tensor is a copy (DenseNet's first layers); add and mul need two operands
        const std::int64_t lowest = (f == kInputs && t == T::Concat) ? 1 : min_value(f);
        if (r[f] < lowest) {
            const bool binary = max_value(f) == 1;
            return error(f, std::to_string(r[f]) + (binary ? " must be 0 or 1" : " must be at least " +
                                                                                    std::to_string(lowest)));
        }
        if (r[f] > max_value(f)) {
            const bool binary = max_value(f) == 1;
            return error(f, std::to_string(r[f]) + (binary ? " must be 0 or 1" : " is larger than the limit " +
                                                                                    std::to_string(kMaxSize)));
        }
    }
    // fields a type does not read must be 0 (normalize zeroes them): one bit per field and type
    static_assert(kNumFields <= 64, "the mask of fields a type reads is 64 bits");
    static const auto used_mask = [] {
        std::array<std::uint64_t, kNumLayerTypes> m{};
        for (int k = 0; k < kNumLayerTypes; ++k)
            for (int f : type_fields(static_cast<T>(k))) m[k] |= std::uint64_t{1} << f;
        return m;
    }();
    for (int f = 0; f < kNumFields; ++f) {
        if (r[f] != 0 && !(used_mask[static_cast<int>(t)] & (std::uint64_t{1} << f)))
            return error(f, std::string("does not apply to ") + type_name(t) + " layers and must be 0");
    }
    if (is_conv(t)) {
        const std::int64_t g = r[kGroups];
        if (r[kInChannels] % g != 0)
            return error(kGroups, "groups " + std::to_string(g) + " does not divide in_channels " +
                                      std::to_string(r[kInChannels]));
        if (r[kOutChannels] % g != 0)
            return error(kGroups, "groups " + std::to_string(g) + " does not divide out_channels " +
                                      std::to_string(r[kOutChannels]));
        if (t == T::Conv2d)
            if (auto e = check_window(r, true, false)) return e;
        if (t == T::ConvTranspose2d) {
            const int op[2] = {kOutputPaddingH, kOutputPaddingW}, s[2] = {kStrideH, kStrideW},
                      d[2] = {kDilationH, kDilationW};
            for (int a = 0; a < 2; ++a)  // PyTorch: smaller than either the stride or the dilation
                if (r[op[a]] >= std::max(r[s[a]], r[d[a]]))
                    return error(op[a], "output padding " + std::to_string(r[op[a]]) +
                                            " must be smaller than the stride " + std::to_string(r[s[a]]) +
                                            " or the dilation " + std::to_string(r[d[a]]));
        }
    }
    if (t == T::Attention) {
        if (r[kKvHeads] > r[kHeads])
            return error(kKvHeads, "kv_heads " + std::to_string(r[kKvHeads]) + " is more than heads " +
                                       std::to_string(r[kHeads]));
        if (r[kHeads] % r[kKvHeads] != 0)
            return error(kKvHeads, "kv_heads " + std::to_string(r[kKvHeads]) + " does not divide heads " +
                                       std::to_string(r[kHeads]));
    }
    if (t == T::ChannelShuffle && r[kInChannels] % r[kGroups] != 0)
        return error(kGroups, "groups " + std::to_string(r[kGroups]) + " does not divide in_channels " +
                                  std::to_string(r[kInChannels]));
    if (is_pool(t))
        if (auto e = check_window(r, t == T::MaxPool2d, true, r[kCeilMode] != 0)) return e;
    Checked c;
    const InfoRow info = info_checked(r, c);
    if (c.overflow) return error(kBatch, "the layer's counts overflow 64-bit integers: sizes too large");
    if (info[kInfoOutH] < 1)
        return error(kKernelH, "kernel " + std::to_string(r[kKernelH]) + " leaves no output for in_h " +
                                   std::to_string(r[kInH]) + (t == T::ConvTranspose2d ? " and its padding" : ""));
    if (info[kInfoOutW] < 1)
        return error(kKernelW, "kernel " + std::to_string(r[kKernelW]) + " leaves no output for in_w " +
                                   std::to_string(r[kInW]) + (t == T::ConvTranspose2d ? " and its padding" : ""));
    if (info_out != nullptr) *info_out = info;
    return {};
}

bool to_rows_layout(const std::int64_t* row, std::int64_t* out) {
    std::copy(row, row + kNumFields, out);
    const T t = static_cast<T>(row[kType]);
    int a = -1, b = -1, c = -1;  // fields joining the batch
    switch (t) {
        case T::Add:
        case T::Mul:
            out[kBroadcast] = 0;  // as a full one: the caller weighs it by the bytes it moves
            [[fallthrough]];
        case T::ReLU:
        case T::ReLU6:
        case T::Sigmoid:
        case T::HardSigmoid:
        case T::SiLU:
        case T::HardSwish:
        case T::GELU:
        case T::Tanh:
        case T::Concat:
            b = kInH;
            c = kInW;
            break;
        case T::MatMul:
            a = kHeads;
            break;
        default: return false;
    }
    std::int64_t batch = row[kBatch];
    for (int f : {a, b, c}) {
        if (f < 0) continue;
        if (__builtin_mul_overflow(batch, row[f], &batch)) return false;  // (a valid row's counts fit: never)
        out[f] = 1;
    }
    out[kBatch] = batch;
    return batch != row[kBatch] || out[kBroadcast] != row[kBroadcast];
}

InfoRow compute_info(const std::int64_t* row) {
    Checked c;
    return info_checked(row, c);
}

void compute_features(const std::int64_t* r, const std::int64_t* info, double* out) {
    const auto d = [](std::int64_t v) { return static_cast<double>(v); };
    const T t = static_cast<T>(r[kType]);
    out[kFBatch] = d(r[kBatch]);
    out[kFInChannels] = d(r[kInChannels]);
    out[kFInH] = d(r[kInH]);
    out[kFInW] = d(r[kInW]);
    out[kFOutChannels] = d(info[kInfoOutChannels]);
    out[kFOutH] = d(info[kInfoOutH]);
    out[kFOutW] = d(info[kInfoOutW]);
    out[kFKernelH] = d(r[kKernelH]);
    out[kFKernelW] = d(r[kKernelW]);
    out[kFStrideH] = d(r[kStrideH]);
    out[kFStrideW] = d(r[kStrideW]);
    out[kFPadH] = d(r[kPadH]);
    out[kFPadW] = d(r[kPadW]);
    out[kFDilationH] = d(r[kDilationH]);
    out[kFDilationW] = d(r[kDilationW]);
    out[kFGroups] = d(r[kGroups]);
    out[kFInFeatures] = d(r[kInFeatures]);
    out[kFOutFeatures] = d(r[kOutFeatures]);
    out[kFInputs] = d(r[kInputs]);
    out[kFDTypeBytes] = d(dtype_bytes(static_cast<DType>(r[kDType])));
    out[kFMacs] = d(info[kInfoMacs]);
    out[kFFlops] = d(info[kInfoFlops]);
    out[kFParams] = d(info[kInfoParams]);
    out[kFBytesInput] = d(info[kInfoBytesInput]);
    out[kFBytesWeights] = d(info[kInfoBytesWeights]);
    out[kFBytesOutput] = d(info[kInfoBytesOutput]);
    out[kFBytesMoved] = d(info[kInfoBytesInput]) + d(info[kInfoBytesWeights]) + d(info[kInfoBytesOutput]);
    switch (t) {
        case T::Linear:
        case T::LayerNorm: out[kFElementsIn] = d(r[kBatch]) * d(r[kTokens]) * d(r[kInFeatures]); break;
        case T::Embedding: out[kFElementsIn] = d(r[kBatch]) * d(r[kTokens]); break;  // the indices
        case T::MatMul:  // both operands
            out[kFElementsIn] = d(info[kInfoBytesInput]) / d(dtype_bytes(static_cast<DType>(r[kDType])));
            break;
        case T::Attention:  // all of Q, K and V, from the shapes (K and V may be of another dtype); each
                            // product is at most what info_checked found to fit
            out[kFElementsIn] = d(r[kBatch] * r[kHeadDim] * (r[kHeads] * r[kTokens] + 2 * r[kKvHeads] * r[kKvTokens]));
            break;
        default: out[kFElementsIn] = d(r[kBatch]) * d(r[kInChannels]) * d(r[kInH]) * d(r[kInW]); break;
    }
    out[kFElementsOut] = d(r[kBatch]) * d(info[kInfoOutChannels]) * d(info[kInfoOutH]) * d(info[kInfoOutW]);
    out[kFTokens] = d(r[kTokens]);
    out[kFHeads] = d(r[kHeads]);
    out[kFKvTokens] = d(r[kKvTokens]);
    out[kFHeadDim] = d(r[kHeadDim]);
    out[kFCausal] = d(r[kCausal]);
    out[kFApproximate] = d(r[kApproximate]);
    out[kFInterpolation] = d(r[kInterpolation]);
    out[kFOutputPaddingH] = d(r[kOutputPaddingH]);
    out[kFOutputPaddingW] = d(r[kOutputPaddingW]);
    out[kFChannelsFirst] = d(r[kChannelsFirst]);
    out[kFKvHeads] = d(r[kKvHeads]);
    out[kFWindow] = d(r[kWindow]);
    // a type that does not read kv_dtype has 0 there, which is fp32's code: its feature is 0, as its other fields'
    out[kFKvDTypeBytes] = t == T::Attention ? d(dtype_bytes(static_cast<DType>(r[kKvDType]))) : 0.0;
    if (t == T::Attention) {
        const double bh = d(r[kBatch]) * d(r[kHeads]), tokens = d(r[kTokens]);
        out[kFAttnCtas64] = bh * std::ceil(tokens / 64);
        out[kFAttnCtas128] = bh * std::ceil(tokens / 128);
        out[kFBatchHeads] = bh;
        out[kFBatchKvHeads] = d(r[kBatch]) * d(r[kKvHeads]);
    } else {
        out[kFAttnCtas64] = out[kFAttnCtas128] = out[kFBatchHeads] = out[kFBatchKvHeads] = 0.0;
    }
    switch (t) {
        case T::Linear:
        case T::LayerNorm:
        case T::MatMul:
        case T::Attention:
        case T::Embedding: out[kFRows] = d(r[kBatch]) * d(r[kTokens]); break;
        default: out[kFRows] = d(r[kBatch]) * d(r[kInH]) * d(r[kInW]); break;
    }
    // The GEMMs: count of them, each (m x k) (k x n)
    double count = 0, m = 0, n = 0, k = 0;
    switch (t) {
        case T::Conv2d:
            count = d(r[kGroups]);
            m = d(r[kBatch]) * d(info[kInfoOutH]) * d(info[kInfoOutW]);
            n = d(r[kOutChannels] / r[kGroups]);
            k = d(r[kInChannels] / r[kGroups]) * d(r[kKernelH]) * d(r[kKernelW]);
            break;
        case T::ConvTranspose2d:  // columns = input^T x weight, then col2im
            count = d(r[kGroups]);
            m = d(r[kBatch]) * d(r[kInH]) * d(r[kInW]);
            n = d(r[kOutChannels] / r[kGroups]) * d(r[kKernelH]) * d(r[kKernelW]);
            k = d(r[kInChannels] / r[kGroups]);
            break;
        case T::Linear:
            count = 1;
            m = d(r[kBatch]) * d(r[kTokens]);
            n = d(r[kOutFeatures]);
            k = d(r[kInFeatures]);
            break;
        case T::MatMul:
            count = d(r[kBatch]) * d(r[kHeads]);
            m = d(r[kTokens]);
            n = d(r[kOutFeatures]);
            k = d(r[kInFeatures]);
            break;
        default: break;
    }
    out[kFGemmM] = m;
    out[kFGemmN] = n;
    out[kFGemmK] = k;
    const auto tiled = [&](double tm, double tn) {
        return 2 * count * (std::ceil(m / tm) * tm) * (std::ceil(n / tn) * tn) * k;
    };
    out[kFTileFlops128x128] = tiled(128, 128);
    out[kFTileFlops128x64] = tiled(128, 64);
    out[kFTileFlops64x64] = tiled(64, 64);
    out[kFTileFlops128x32] = tiled(128, 32);
    out[kFTileFlops64x128] = tiled(64, 128);
    out[kFTileFlops32x128] = tiled(32, 128);
    const auto tiles = [&](double tm, double tn) { return count * std::ceil(m / tm) * std::ceil(n / tn); };
    out[kFTiles128x128] = tiles(128, 128);
    out[kFTiles128x256] = tiles(128, 256);
    out[kFTiles64x128] = tiles(64, 128);
}

ValidationError prepare(std::int64_t* row) {
    ValidationError e = normalize(row);
    return e ? e : validate(row);
}

std::ptrdiff_t prepare_rows(std::int64_t* rows, std::size_t n, ValidationError* err) {
    for (std::size_t i = 0; i < n; ++i) {
        ValidationError e = prepare(rows + i * kNumFields);
        if (e) {
            if (err) *err = std::move(e);
            return static_cast<std::ptrdiff_t>(i);
        }
    }
    return -1;
}

void compute_info_rows(const std::int64_t* rows, std::size_t n, std::int64_t* info) {
    RowCache<InfoRow> cache;  // a row equal to one seen before has its info
    for (std::size_t i = 0; i < n; ++i) {
        const std::int64_t* row = rows + i * kNumFields;
        const bool cached = cache.use();
        const std::uint64_t h = cached ? RowCache<InfoRow>::hash(row) : 0;
        const InfoRow* hit = cached ? cache.find(row, h) : nullptr;
        const InfoRow r = hit != nullptr ? *hit : compute_info(row);
        if (cached && hit == nullptr) cache.insert(row, h, r);
        std::copy(r.begin(), r.end(), info + i * kNumInfo);
    }
}

void compute_feature_rows(const std::int64_t* rows, const std::int64_t* info, std::size_t n, double* features) {
    for (std::size_t i = 0; i < n; ++i)
        compute_features(rows + i * kNumFields, info + i * kNumInfo, features + i * kNumFeatures);
}

}  // namespace neuralpower
