// The one definition of what a layer is and what it costs.
//
// A layer is a fixed-length row of 64-bit integers (its configuration, see Field). From that row this
// header derives everything the rest of neuralpower needs: validation, the output shape, the counts
// (MACs, FLOPs, parameters, bytes moved) and the feature vector that the runtime and power models are
// fit on (Python, through the bindings) and evaluated on (the C++ evaluator). Nothing here may be
// re-implemented elsewhere: fitting and evaluation must see the same numbers.
//
// Plain C++17, no Python headers.
#pragma once

#include <array>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace neuralpower {

// Layer types. The numeric codes are part of the on-disk model format: append, never reorder.
enum class LayerType : std::int64_t {
    Conv2d = 0,
    Linear,
    MaxPool2d,
    AvgPool2d,
    AdaptiveAvgPool2d,
    BatchNorm2d,
    ReLU,
    ReLU6,
    Sigmoid,
    HardSigmoid,
    SiLU,
    HardSwish,
    GELU,
    Add,
    Mul,
    Concat,
    Softmax,
    Flatten,
    ChannelShuffle,  // ShuffleNet's transpose of channel groups: a pure copy
    LayerNorm,       // over in_features at each of tokens positions (channels_first: ConvNeXt's LayerNorm2d)
    MatMul,          // activation x activation: batch x heads x [tokens x in_features] @ [in_features x out_features]
    Attention,       // scaled dot-product attention, one fused layer
    Embedding,       // a table lookup of tokens rows of out_features from in_features (the vocabulary)
    Upsample,        // to out_h x out_w, nearest (interpolation 0) or bilinear (1)
    ConvTranspose2d,
    Tanh,
    Count
};
constexpr int kNumLayerTypes = static_cast<int>(LayerType::Count);

// Element types. Codes are part of the on-disk formats (tables name them, models record one): append only.
enum class DType : std::int64_t {
    FP32 = 0,
    FP16,
    BF16,
    FP8,  // one byte per element (E4M3 or E5M2 alike: the counts do not tell them apart)
    Count
};
constexpr int kNumDTypes = static_cast<int>(DType::Count);

// Columns of a layer row. Append, never reorder (same reason as LayerType).
enum Field : int {
    kType = 0,
    kBatch,
    kDType,
    kInChannels,
    kInH,
    kInW,
    kOutChannels,
    kOutH,  // only read by adaptive_avgpool2d and upsample (their target size); computed for every other type
    kOutW,
    kKernelH,
    kKernelW,
    kStrideH,
    kStrideW,
    kPadH,
    kPadW,
    kDilationH,
    kDilationW,
    kGroups,
    kInFeatures,
    kOutFeatures,
    kBias,
    kCeilMode,
    kInputs,     // add, mul, concat: number of operands
    kBroadcast,  // add, mul: operands after the first are N x C x 1 x 1 (squeeze-and-excitation);
                 // matmul: the second operand is one matrix shared by the whole batch
    kTokens,     // rows of a token tensor [batch, tokens, features]; attention: the query length
    kHeads,      // attention; matmul: a second batch dimension (default 1)
    kKvTokens,   // attention: key and value length (default: tokens)
    kHeadDim,    // attention
    kCausal,     // attention: each query attends to keys up to its own position (PyTorch's is_causal)
    kApproximate,     // gelu: 1 for the tanh approximation
    kInterpolation,   // upsample: 0 nearest, 1 bilinear
    kOutputPaddingH,  // conv_transpose2d
    kOutputPaddingW,
    kChannelsFirst,   // layernorm over the channels of N x C x H x W (tokens = H x W); softmax: 1 (the
                      // default) over dim 1 of N x C x H x W, 0 over the last axis of N x H x W x C
    // Attention as LLM serving runs it:
    kKvHeads,  // key and value heads (grouped-query attention: heads / kv_heads query heads share each); they
               // must divide heads (default: heads). K and V bytes count kv_heads heads; MACs and FLOPs do not
               // change (every query head still scores every key it sees).
    kWindow,   // sliding-window attention: each query sees at most the `window` most recent keys up to and
               // including its own position (0, the default: no window). Causal: query i sees
               // min(i + 1, kv_tokens, window) keys; otherwise min(kv_tokens, window). Only the pairs scored
               // (MACs, FLOPs) follow the window: K and V bytes count the whole tensors, as with a causal mask
               // (for a decode step over a sliding-window cache, give the cached length as kv_tokens).
    kKvDType,  // the dtype code of K and V (a KV cache in fp8 beside bf16 queries; default: dtype): their bytes
    kNumFields
};

// What compute_info produces for each layer, all exact integers.
enum Info : int {
    kInfoOutChannels = 0,  // for 2-D outputs (linear, flatten): the feature count
    kInfoOutH,
    kInfoOutW,
    kInfoOutRank,  // 4 for N x C x H x W, 3 for N x tokens x F (out_h: tokens), 2 for N x F
    kInfoMacs,
    kInfoFlops,
    kInfoParams,
    kInfoBytesInput,    // activations read
    kInfoBytesWeights,  // weights and other per-layer constants read
    kInfoBytesOutput,   // activations written
    kNumInfo
};

// The model features. Append only: fitted models store feature names, but keep codes stable anyway.
enum Feature : int {
    kFBatch = 0,
    kFInChannels,
    kFInH,
    kFInW,
    kFOutChannels,
    kFOutH,
    kFOutW,
    kFKernelH,
    kFKernelW,
    kFStrideH,
    kFStrideW,
    kFPadH,
    kFPadW,
    kFDilationH,
    kFDilationW,
    kFGroups,
    kFInFeatures,
    kFOutFeatures,
    kFInputs,
    kFDTypeBytes,
    kFMacs,
    kFFlops,
    kFParams,
    kFBytesInput,
    kFBytesWeights,
    kFBytesOutput,
    kFBytesMoved,  // NeuralPower's "memory accessed": input + weights + output
    kFElementsIn,
    kFElementsOut,
    kFTokens,
    kFHeads,
    kFKvTokens,
    kFHeadDim,
    kFCausal,
    kFApproximate,
    kFInterpolation,
    kFOutputPaddingH,
    kFOutputPaddingW,
    kFChannelsFirst,
    kFRows,  // vectors the layer works on: batch x tokens (token layers), batch x in_h x in_w (the others)
    // The layer as GEMMs C[m x n] += A[m x k] B[k x n]: conv2d as an implicit GEMM per group, conv_transpose2d
    // as a GEMM per group then col2im, linear as one, matmul as one per batch item and head. 0 for the other
    // types.
    kFGemmM,
    kFGemmN,
    kFGemmK,
    // 2 x k x the output padded to whole tiles of 128 x 128, 128 x 64, ... (tile quantization: a GEMM kernel
    // computes whole tiles), summed over the GEMMs; 0 for the other types.
    kFTileFlops128x128,
    kFTileFlops128x64,
    kFTileFlops64x64,
    kFTileFlops128x32,
    kFTileFlops64x128,
    kFTileFlops32x128,
    kFKvHeads,
    kFWindow,
    kFKvDTypeBytes,  // bytes per element of K and V (attention; 0 for the other types)
    // Output tiles of 128 x 128, 128 x 256 and 64 x 128 summed over the GEMMs (0 for the other types): the thread
    // blocks a GEMM kernel launches, whose waves over the SMs its runtime steps with.
    kFTiles128x128,
    kFTiles128x256,
    kFTiles64x128,
    // Attention's thread blocks as a fused kernel launches them: batch x heads x query tiles of 64 and of 128
    // tokens; and batch x heads, batch x kv_heads (0 for the other types).
    kFAttnCtas64,
    kFAttnCtas128,
    kFBatchHeads,
    kFBatchKvHeads,
    kNumFeatures
};

using LayerRow = std::array<std::int64_t, kNumFields>;
using InfoRow = std::array<std::int64_t, kNumInfo>;

const std::array<const char*, kNumFields>& field_names();
const std::array<const char*, kNumLayerTypes>& type_names();
const std::array<const char*, kNumDTypes>& dtype_names();
const std::array<const char*, kNumInfo>& info_names();
const std::array<const char*, kNumFeatures>& feature_names();

// The features a layer type's models use by default: its configuration plus NeuralPower's special
// terms (FLOPs and memory accessed).
const std::vector<int>& type_features(LayerType t);

// Fields a layer type reads (the rest of its row is ignored and should be zero).
const std::vector<int>& type_fields(LayerType t);
// Fields a layer type cannot do without (no default).
const std::vector<int>& type_required_fields(LayerType t);

int dtype_bytes(DType d);

// Marks a field that was not given (an empty cell). normalize() replaces it with the type's default.
constexpr std::int64_t kMissing = INT64_MIN;

struct ValidationError {
    int field = -1;  // the offending Field, or -1 when the row is valid
    std::string message;
    explicit operator bool() const { return field >= 0; }
};

// Fills the defaults of a row in place (stride of a pooling layer defaults to its kernel, everything
// else to a constant such as stride 1, padding 0, bias 1, batch 1, fp32) and zeroes the fields its type
// does not read, so that equal layers have equal rows. Fails when a required field is missing.
ValidationError normalize(std::int64_t* row);

// Checks one normalized row: value ranges, group divisibility, kernels that do not fit the padded input,
// counts that would overflow 64 bits. Rows that pass can be given to compute_info safely.
ValidationError validate(const std::int64_t* row);
// The same, also giving the row's info when it is valid (what compute_info would give), so that a caller that
// validates and then computes pays for the counts once.
ValidationError validate(const std::int64_t* row, InfoRow* info);

// Output shape and counts of one valid row.
InfoRow compute_info(const std::int64_t* row);

// Feature vector of one valid row, given its info.
void compute_features(const std::int64_t* row, const std::int64_t* info, double* out);

// A valid row in the layout of operator tables that hold tensors as rows x features (NeuSight's [B, H]): an
// element-wise layer's height and width join its batch (batch x H x W rows of its channels), a matmul's heads join
// its batch: the same computation, the same counts. A broadcast add or mul becomes the full one of its shape (more
// bytes: a caller weighs its features by the bytes the broadcast one moves). Writes the row to `out` and returns
// whether it differs.
bool to_rows_layout(const std::int64_t* row, std::int64_t* out);

// normalize, then validate: what every row from outside goes through before anything is computed from it.
ValidationError prepare(std::int64_t* row);

// Batch forms over contiguous row-major arrays of n rows. prepare_rows normalizes then validates each
// row in place and returns the index of the first bad row (its error in *error), or -1.
std::ptrdiff_t prepare_rows(std::int64_t* rows, std::size_t n, ValidationError* error);
void compute_info_rows(const std::int64_t* rows, std::size_t n, std::int64_t* info);
void compute_feature_rows(const std::int64_t* rows, const std::int64_t* info, std::size_t n,
                          double* features);

}  // namespace neuralpower
