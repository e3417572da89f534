// kconv's TensorFlow ops: a thin shim between TensorFlow's op/kernel machinery and the kc_api table that
// `import kconv` hands over (kconv_api.h). Everything here is plumbing: attrs, shapes, allocation, status.
// Geometry, validation of shapes against each other, algorithm choice and arithmetic happen behind kc_api,
// shared with kconv's numpy API, so the two paths cannot disagree.
//
// Built and loaded by kconv/_oplib.py; the binary is tied to the TensorFlow version it was compiled against.

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kconv_api.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/framework/tensor_shape.h"

namespace kconv {
namespace {

using ::absl::Status;
using ::tensorflow::DataType;
using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;
using ::tensorflow::shape_inference::DimensionHandle;
using ::tensorflow::shape_inference::InferenceContext;
using ::tensorflow::shape_inference::ShapeHandle;

// TensorFlow's errors::X(...) helpers are deprecated in favour of absl's.
template <typename... Args>
Status Invalid(const Args&... args) {
  return absl::InvalidArgumentError(absl::StrCat(args...));
}

// Set once by kconv_set_api (from Python, right after loading); read by every shape function and kernel.
std::atomic<const kc_api*> g_api{nullptr};

const char kNotLoaded[] =
    "kconv's kernels are not loaded in this process: import kconv before building or running a graph "
    "with kconv ops";

constexpr int kErrLen = 512;

const char kRanks[] =
    "expected an input (N, H, W, C) with filters (kh, kw, C/groups, K), or an input (N, W, C) with filters "
    "(k, C/groups, K)";

// ---------------------------------------------------------------------------------------------- attrs

struct ConvAttrs {
  std::vector<int32_t> strides, dilations;
  int padding = KC_PAD_VALID;
  std::vector<int64_t> explicit_paddings;
  int algorithm = KC_ALGO_AUTO;
  int activation = KC_ACT_LINEAR;
  int threads = 0;
  int dtype = KC_FLOAT32;
};

int DtypeCode(DataType t) { return t == tensorflow::DT_DOUBLE ? KC_FLOAT64 : KC_FLOAT32; }

Status ParseActivation(const std::string& name, int* out) {
  static const char* const kNames[KC_ACT_COUNT] = {"linear", "relu",    "relu6", "leaky_relu", "elu",
                                                   "selu",   "sigmoid", "tanh",  "silu",       "gelu"};
  for (int i = 0; i < KC_ACT_COUNT; ++i) {
    if (name == kNames[i]) {
      *out = i;
      return Status();
    }
  }
  return Invalid("attr 'activation': unknown activation '", name,
                 "' (expected linear, relu, relu6, leaky_relu, elu, selu, sigmoid, tanh, "
                 "silu or gelu)");
}

Status ParseAlgorithm(const std::string& name, int* out) {
  static const std::pair<const char*, int> kNames[] = {
      {"auto", KC_ALGO_AUTO}, {"direct", KC_ALGO_DIRECT}, {"winograd", KC_ALGO_WINOGRAD},
      {"winograd2", 2},       {"winograd4", 4},           {"winograd6", 6}};
  for (const auto& n : kNames) {
    if (name == n.first) {
      *out = n.second;
      return Status();
    }
  }
  return Invalid("attr 'algorithm': unknown algorithm '", name,
                 "' (expected auto, direct, winograd, winograd2, winograd4 or winograd6)");
}

// Reads and checks the attrs that the shim itself interprets (counts, names, signs). Ctx is
// OpKernelConstruction or InferenceContext: both have GetAttr.
template <class Ctx>
Status ReadConvAttrs(Ctx* c, bool has_activation, ConvAttrs* a) {
  DataType t;
  TF_RETURN_IF_ERROR(c->GetAttr("T", &t));
  a->dtype = DtypeCode(t);
  TF_RETURN_IF_ERROR(c->GetAttr("strides", &a->strides));
  TF_RETURN_IF_ERROR(c->GetAttr("dilations", &a->dilations));
  if (a->strides.size() != 2 || a->strides[0] < 1 || a->strides[1] < 1)
    return Invalid("attr 'strides' must be 2 positive values (h, w), got [", absl::StrJoin(a->strides, ","),
                   "]");
  if (a->dilations.size() != 2 || a->dilations[0] < 1 || a->dilations[1] < 1)
    return Invalid("attr 'dilations' must be 2 positive values (h, w), got [",
                   absl::StrJoin(a->dilations, ","), "]");
  std::string padding;
  TF_RETURN_IF_ERROR(c->GetAttr("padding", &padding));
  a->padding = padding == "SAME"       ? KC_PAD_SAME
               : padding == "CAUSAL"   ? KC_PAD_CAUSAL
               : padding == "EXPLICIT" ? KC_PAD_EXPLICIT
                                       : KC_PAD_VALID;  // the attr's allowed values leave only VALID
  TF_RETURN_IF_ERROR(c->GetAttr("explicit_paddings", &a->explicit_paddings));
  if (a->padding == KC_PAD_EXPLICIT) {
    if (a->explicit_paddings.size() != 4 ||
        *std::min_element(a->explicit_paddings.begin(), a->explicit_paddings.end()) < 0)
      return Invalid(
          "attr 'explicit_paddings' must be 4 non-negative values (top, bottom, left, right) with "
          "padding 'EXPLICIT', got [",
          absl::StrJoin(a->explicit_paddings, ","), "]");
  } else if (!a->explicit_paddings.empty()) {
    return Invalid("attr 'explicit_paddings' must be empty unless padding is 'EXPLICIT', got [",
                   absl::StrJoin(a->explicit_paddings, ","), "] with padding '", padding, "'");
  }
  std::string algorithm;
  TF_RETURN_IF_ERROR(c->GetAttr("algorithm", &algorithm));
  TF_RETURN_IF_ERROR(ParseAlgorithm(algorithm, &a->algorithm));
  if (has_activation) {
    std::string activation;
    TF_RETURN_IF_ERROR(c->GetAttr("activation", &activation));
    TF_RETURN_IF_ERROR(ParseActivation(activation, &a->activation));
  }
  TF_RETURN_IF_ERROR(c->GetAttr("threads", &a->threads));
  if (a->threads < 0) return Invalid("attr 'threads' must be >= 0, got ", a->threads);
  return Status();
}

// The rank picks 1-D or 2-D; the attrs that have no meaning along a 1-D convolution's missing H axis must
// be neutral there, and CAUSAL exists only for 1-D (as in Keras).
Status CheckAttrsForRank(const ConvAttrs& a, int rank) {
  if (rank == 3) {
    if (a.strides[0] != 1 || a.dilations[0] != 1)
      return Invalid("a 1-D convolution needs strides[0] == dilations[0] == 1, got strides [",
                     absl::StrJoin(a.strides, ","), "] and dilations [", absl::StrJoin(a.dilations, ","),
                     "]");
    if (a.padding == KC_PAD_EXPLICIT && (a.explicit_paddings[0] != 0 || a.explicit_paddings[1] != 0))
      return Invalid("a 1-D convolution has no top/bottom padding: attr 'explicit_paddings' [",
                     absl::StrJoin(a.explicit_paddings, ","), "]");
  } else if (a.padding == KC_PAD_CAUSAL) {
    return Invalid("padding 'CAUSAL' is only valid for a 1-D convolution (rank-3 input)");
  }
  return Status();
}

bool HasPreactivation(int activation) { return activation == KC_ACT_SILU || activation == KC_ACT_GELU; }

// in = {N, H, W, C}, f = {kh, kw, cg, K} (1-D: H = kh = 1).
kc_conv_desc MakeDesc(const ConvAttrs& a, const std::array<long, 4>& in, const std::array<long, 4>& f) {
  kc_conv_desc d{};
  d.N = in[0], d.H = in[1], d.W = in[2], d.C = in[3];
  d.kh = f[0], d.kw = f[1], d.cg = f[2], d.K = f[3];
  d.stride_h = a.strides[0], d.stride_w = a.strides[1];
  d.dilation_h = a.dilations[0], d.dilation_w = a.dilations[1];
  d.padding = a.padding;
  if (a.padding == KC_PAD_EXPLICIT) {
    d.pad_top = a.explicit_paddings[0], d.pad_bottom = a.explicit_paddings[1];
    d.pad_left = a.explicit_paddings[2], d.pad_right = a.explicit_paddings[3];
  }
  d.algorithm = a.algorithm;
  d.dtype = a.dtype;
  d.activation = a.activation;
  d.threads = a.threads;
  return d;
}

// A rank-3 (1-D) or rank-4 shape as the desc's 4 numbers: an input (N, W, C) is (N, 1, W, C), a filter
// (k, cg, K) is (1, k, cg, K).
std::array<long, 4> Dims4(const TensorShape& s, bool filter) {
  if (s.dims() == 3 && filter)
    return {1L, static_cast<long>(s.dim_size(0)), static_cast<long>(s.dim_size(1)),
            static_cast<long>(s.dim_size(2))};
  if (s.dims() == 3)
    return {static_cast<long>(s.dim_size(0)), 1L, static_cast<long>(s.dim_size(1)),
            static_cast<long>(s.dim_size(2))};
  return {static_cast<long>(s.dim_size(0)), static_cast<long>(s.dim_size(1)),
          static_cast<long>(s.dim_size(2)), static_cast<long>(s.dim_size(3))};
}

Status ApiStatus(int rc, const char* err) {
  if (rc == KC_ERR_ARGUMENT) return Invalid(err);
  if (rc == KC_ERR_MEMORY) return absl::ResourceExhaustedError(err);
  return absl::InternalError(absl::StrCat("kconv returned status ", rc, ": ", err));
}

Status ShapesError(const std::string& input, const std::string& filter, const char* err) {
  return Invalid("input shape ", input, " and filter shape ", filter, ": ", err);
}

// ------------------------------------------------------------------------------------ shape functions

Status NeedApi(const kc_api** api) {
  *api = g_api.load(std::memory_order_acquire);
  return *api ? Status() : absl::FailedPreconditionError(kNotLoaded);
}

// Value of a dimension, or -1 when unknown.
long DimOr(InferenceContext* c, ShapeHandle s, int i) {
  DimensionHandle d = c->Dim(s, i);
  return c->ValueKnown(d) ? static_cast<long>(c->Value(d)) : -1L;
}

// The convolution's output shape from possibly partial input and filter shapes. (Ho, Wo) come from
// api->output_size when the spatial sizes (H, W, kh, kw) are known, else they are unknown. An unknown batch
// or channel count cannot change (Ho, Wo) or make them invalid, so stand-ins that are always valid take its
// place: N = 1, C = cg (one group) or cg = C, K = C (a multiple of any group count).
Status ConvOutputShape(InferenceContext* c, const kc_api* api, const ConvAttrs& a, ShapeHandle in,
                       ShapeHandle f, ShapeHandle* out) {
  const int rank = c->RankKnown(in) ? c->Rank(in) : c->RankKnown(f) ? c->Rank(f) : -1;
  if (rank == -1) {
    *out = c->UnknownShape();
    return Status();
  }
  ShapeHandle unused;
  if ((rank != 3 && rank != 4) || !c->WithRank(in, rank, &unused).ok() || !c->WithRank(f, rank, &unused).ok())
    return Invalid("input shape ", c->DebugString(in), " and filter shape ", c->DebugString(f), ": ", kRanks);
  TF_RETURN_IF_ERROR(CheckAttrsForRank(a, rank));

  std::array<long, 4> x, w;  // {N, H, W, C}, {kh, kw, cg, K}; -1 where unknown
  if (rank == 3) {
    x = {DimOr(c, in, 0), 1L, DimOr(c, in, 1), DimOr(c, in, 2)};
    w = {1L, DimOr(c, f, 0), DimOr(c, f, 1), DimOr(c, f, 2)};
  } else {
    x = {DimOr(c, in, 0), DimOr(c, in, 1), DimOr(c, in, 2), DimOr(c, in, 3)};
    w = {DimOr(c, f, 0), DimOr(c, f, 1), DimOr(c, f, 2), DimOr(c, f, 3)};
  }
  DimensionHandle ho = c->UnknownDim(), wo = c->UnknownDim();
  if (x[1] >= 0 && x[2] >= 0 && w[0] >= 0 && w[1] >= 0) {
    if (x[0] < 0) x[0] = 1;
    if (x[3] < 0 && w[2] < 0) x[3] = w[2] = 1;
    if (x[3] < 0) x[3] = w[2];
    if (w[2] < 0) w[2] = x[3];
    if (w[3] < 0) w[3] = x[3];
    const kc_conv_desc d = MakeDesc(a, x, w);
    long h = 0, v = 0;
    char err[kErrLen] = "";
    if (api->output_size(&d, &h, &v, err, kErrLen) != KC_OK)
      return ShapesError(c->DebugString(in), c->DebugString(f), err);
    ho = c->MakeDim(h), wo = c->MakeDim(v);
  }
  DimensionHandle n = c->Dim(in, 0), k = c->Dim(f, rank - 1);
  *out = rank == 3 ? c->MakeShape({n, wo, k}) : c->MakeShape({n, ho, wo, k});
  return Status();
}

Status ConvShape(InferenceContext* c) {
  const kc_api* api;
  TF_RETURN_IF_ERROR(NeedApi(&api));
  ConvAttrs a;
  TF_RETURN_IF_ERROR(ReadConvAttrs(c, true, &a));
  ShapeHandle out, bias;
  TF_RETURN_IF_ERROR(ConvOutputShape(c, api, a, c->input(0), c->input(1), &out));
  if (!c->WithRank(c->input(2), 1, &bias).ok())
    return Invalid("bias shape ", c->DebugString(c->input(2)), " must be [K] or [0]");
  if (c->RankKnown(c->input(1))) {
    const long k = DimOr(c, c->input(1), c->Rank(c->input(1)) - 1), nb = DimOr(c, bias, 0);
    if (k >= 0 && nb > 0 && nb != k)
      return Invalid("bias shape ", c->DebugString(bias), " and filter shape ", c->DebugString(c->input(1)),
                     ": the bias needs K = ", k, " values (or none)");
  }
  c->set_output(0, out);
  c->set_output(1, HasPreactivation(a.activation) ? out : c->MakeShape({0}));
  return Status();
}

// Backprop ops: the result has the shape that *_sizes holds; out_backprop must be compatible with the
// forward's output shape.
Status CheckOutBackprop(InferenceContext* c, const kc_api* api, const ConvAttrs& a, ShapeHandle in,
                        ShapeHandle f, ShapeHandle dy) {
  ShapeHandle expected, unused;
  TF_RETURN_IF_ERROR(ConvOutputShape(c, api, a, in, f, &expected));
  if (!c->Merge(expected, dy, &unused).ok())
    return Invalid("out_backprop shape ", c->DebugString(dy), " does not match the output shape ",
                   c->DebugString(expected), " of the convolution of input shape ", c->DebugString(in),
                   " with filter shape ", c->DebugString(f));
  return Status();
}

Status BackpropInputShape(InferenceContext* c) {
  const kc_api* api;
  TF_RETURN_IF_ERROR(NeedApi(&api));
  ConvAttrs a;
  TF_RETURN_IF_ERROR(ReadConvAttrs(c, false, &a));
  ShapeHandle in;
  TF_RETURN_IF_ERROR(c->MakeShapeFromShapeTensor(0, &in));
  TF_RETURN_IF_ERROR(CheckOutBackprop(c, api, a, in, c->input(1), c->input(2)));
  c->set_output(0, in);
  return Status();
}

Status ConvTransposeShape(InferenceContext* c) {
  const kc_api* api;
  TF_RETURN_IF_ERROR(NeedApi(&api));
  ConvAttrs a;
  TF_RETURN_IF_ERROR(ReadConvAttrs(c, true, &a));
  ShapeHandle out;
  TF_RETURN_IF_ERROR(c->MakeShapeFromShapeTensor(2, &out));
  TF_RETURN_IF_ERROR(CheckOutBackprop(c, api, a, out, c->input(1), c->input(0)));
  c->set_output(0, out);
  c->set_output(1, HasPreactivation(a.activation) ? out : c->MakeShape({0}));
  return Status();
}

Status BackpropFilterShape(InferenceContext* c) {
  const kc_api* api;
  TF_RETURN_IF_ERROR(NeedApi(&api));
  ConvAttrs a;
  TF_RETURN_IF_ERROR(ReadConvAttrs(c, false, &a));
  ShapeHandle f;
  TF_RETURN_IF_ERROR(c->MakeShapeFromShapeTensor(1, &f));
  TF_RETURN_IF_ERROR(CheckOutBackprop(c, api, a, c->input(0), f, c->input(2)));
  c->set_output(0, f);
  return Status();
}

Status BiasActivationGradShape(InferenceContext* c) {
  const kc_api* api;
  TF_RETURN_IF_ERROR(NeedApi(&api));
  std::string activation;
  int act = KC_ACT_LINEAR;
  TF_RETURN_IF_ERROR(c->GetAttr("activation", &activation));
  TF_RETURN_IF_ERROR(ParseActivation(activation, &act));
  ShapeHandle dy;
  if (!c->WithRankAtLeast(c->input(0), 1, &dy).ok() || !c->Merge(dy, c->input(1), &dy).ok() ||
      (HasPreactivation(act) && !c->Merge(dy, c->input(2), &dy).ok()))
    return Invalid("gradients shape ", c->DebugString(c->input(0)), ", output shape ",
                   c->DebugString(c->input(1)), " and preactivation shape ", c->DebugString(c->input(2)),
                   ": gradients and output (and preactivation, for silu and gelu) must have one "
                   "shape of rank >= 1");
  c->set_output(0, dy);
  c->set_output(1, c->RankKnown(dy) ? c->Vector(c->Dim(dy, -1)) : c->Vector(c->UnknownDim()));
  return Status();
}

// KconvBatchNorm: y like x (rank >= 2, features last); the three statistics are vectors of the features.
Status BatchNormShape(InferenceContext* c) {
  ShapeHandle x, v;
  if (!c->WithRankAtLeast(c->input(0), 2, &x).ok())
    return Invalid("batch norm input shape ", c->DebugString(c->input(0)), ": must have rank >= 2");
  DimensionHandle features = c->Dim(x, -1);
  for (int i = 1; i < 5; ++i) {
    if (!c->WithRank(c->input(i), 1, &v).ok() || !c->Merge(features, c->Dim(v, 0), &features).ok())
      return Invalid("batch norm input shape ", c->DebugString(x), " and parameter ", i, " shape ",
                     c->DebugString(c->input(i)), ": gamma, beta, mean and variance must be vectors of the "
                     "input's last dimension");
  }
  c->set_output(0, x);
  for (int i = 1; i < 4; ++i) c->set_output(i, c->Vector(features));
  return Status();
}

// KconvBatchNormGrad: dx like x, dgamma and dbeta vectors of the features.
Status BatchNormGradShape(InferenceContext* c) {
  ShapeHandle x;
  if (!c->WithRankAtLeast(c->input(0), 2, &x).ok() || !c->Merge(x, c->input(1), &x).ok())
    return Invalid("batch norm gradients shape ", c->DebugString(c->input(0)), " and input shape ",
                   c->DebugString(c->input(1)), ": must be one shape of rank >= 2");
  c->set_output(0, x);
  c->set_output(1, c->Vector(c->Dim(x, -1)));
  c->set_output(2, c->Vector(c->Dim(x, -1)));
  return Status();
}

// ---------------------------------------------------------------------------------------- plan cache

// Plans of one kernel (one node: fixed attrs and dtype), keyed by the shapes. A node usually sees one or a
// few shapes, so a handful of entries suffice; the least recently used goes first. A plan handed out stays
// alive (shared_ptr) even if evicted while another thread runs it.
class PlanCache {
 public:
  struct Entry {
    std::shared_ptr<const kc_plan> plan;
    long ho = 0, wo = 0;
  };

  Status Get(const kc_api* api, const kc_conv_desc& d, const TensorShape& in, const TensorShape& f,
             Entry* out) {
    // The api pointer is part of the key: a plan must go back to the table that made it.
    const Key key = {
        static_cast<long>(reinterpret_cast<intptr_t>(api)), d.N, d.H, d.W, d.C, d.kh, d.kw, d.cg, d.K};
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = map_.find(key);
      if (it != map_.end()) {
        it->second.used = ++tick_;
        *out = it->second.entry;
        return Status();
      }
    }
    // Planning runs outside the lock (it may pack or size workspaces); two threads missing at once each
    // make one, and the first inserted wins.
    char err[kErrLen] = "";
    Entry e;
    int rc = api->output_size(&d, &e.ho, &e.wo, err, kErrLen);
    if (rc == KC_ERR_MEMORY) return ApiStatus(rc, err);   // too large: ResourceExhausted, not a shape error
    if (rc != KC_OK) return ShapesError(in.DebugString(), f.DebugString(), err);
    kc_plan* p = api->plan_create(&d, err, kErrLen);
    if (p == nullptr) return ShapesError(in.DebugString(), f.DebugString(), err);
    e.plan = std::shared_ptr<const kc_plan>(
        p, [api](const kc_plan* q) { api->plan_destroy(const_cast<kc_plan*>(q)); });

    std::lock_guard<std::mutex> lock(mu_);
    auto it = map_.find(key);
    if (it != map_.end()) {
      *out = it->second.entry;
      return Status();
    }
    if (map_.size() >= kMaxEntries) {
      auto oldest = map_.begin();
      for (auto i = map_.begin(); i != map_.end(); ++i)
        if (i->second.used < oldest->second.used) oldest = i;
      map_.erase(oldest);
    }
    map_[key] = Slot{e, ++tick_};
    *out = e;
    return Status();
  }

 private:
  using Key = std::array<long, 9>;
  struct Slot {
    Entry entry;
    uint64_t used;
  };
  static constexpr size_t kMaxEntries = 16;
  std::mutex mu_;
  std::map<Key, Slot> map_;
  uint64_t tick_ = 0;
};

// ------------------------------------------------------------------------------------------- kernels

const void* In(const Tensor& t) { return t.tensor_data().data(); }  // may be null for an empty tensor
void* Out(Tensor* t) { return const_cast<char*>(t->tensor_data().data()); }

// The rank-3 or rank-4 output shape (N, [Ho,] Wo, K); an error, not a crash, if its size overflows.
Status ConvOutShape(int rank, long n, long ho, long wo, long k, TensorShape* out) {
  const int64_t dims[4] = {n, ho, wo, k}, dims1d[3] = {n, wo, k};
  return tensorflow::TensorShapeUtils::MakeShape(rank == 3 ? dims1d : dims, rank, out);
}

Status CheckRanks(const TensorShape& x, const TensorShape& f) {
  if ((x.dims() == 3 || x.dims() == 4) && f.dims() == x.dims()) return Status();
  return Invalid("input shape ", x.DebugString(), " and filter shape ", f.DebugString(), ": ", kRanks);
}

// Shared by the three convolution kernels: attrs, the api, and the plan for (input shape, filter shape).
class ConvKernelBase : public OpKernel {
 public:
  ConvKernelBase(OpKernelConstruction* ctx, bool has_activation) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ReadConvAttrs(ctx, has_activation, &attrs_));
  }

 protected:
  // Checks ranks and rank-specific attrs, then finds or makes the plan.
  Status Plan(const kc_api* api, const TensorShape& x, const TensorShape& f, PlanCache::Entry* e) {
    TF_RETURN_IF_ERROR(CheckRanks(x, f));
    TF_RETURN_IF_ERROR(CheckAttrsForRank(attrs_, x.dims()));
    return cache_.Get(api, MakeDesc(attrs_, Dims4(x, false), Dims4(f, true)), x, f, e);
  }

  // The out_backprop a backprop kernel receives must be the forward's output shape.
  static Status CheckOutBackprop(const TensorShape& dy, const TensorShape& x, const TensorShape& f,
                                 const PlanCache::Entry& e) {
    TensorShape want;
    TF_RETURN_IF_ERROR(ConvOutShape(x.dims(), x.dim_size(0), e.ho, e.wo, f.dim_size(f.dims() - 1), &want));
    if (dy == want) return Status();
    return Invalid("out_backprop shape ", dy.DebugString(), " does not match the output shape ",
                   want.DebugString(), " of the convolution of input shape ", x.DebugString(),
                   " with filter shape ", f.DebugString());
  }

  ConvAttrs attrs_;
  PlanCache cache_;
};

#define KCONV_REQUIRE_API(ctx, api)                          \
  const kc_api* api = g_api.load(std::memory_order_acquire); \
  OP_REQUIRES(ctx, api != nullptr, absl::FailedPreconditionError(kNotLoaded))

template <typename T>
class ConvOp : public ConvKernelBase {
 public:
  explicit ConvOp(OpKernelConstruction* ctx) : ConvKernelBase(ctx, true) {}

  void Compute(OpKernelContext* ctx) override {
    KCONV_REQUIRE_API(ctx, api);
    const Tensor &x = ctx->input(0), &w = ctx->input(1), &b = ctx->input(2);
    PlanCache::Entry e;
    OP_REQUIRES_OK(ctx, Plan(api, x.shape(), w.shape(), &e));
    const long k = w.dim_size(w.dims() - 1);
    OP_REQUIRES(ctx, b.dims() == 1 && (b.dim_size(0) == k || b.dim_size(0) == 0),
                Invalid("bias shape ", b.shape().DebugString(), " and filter shape ", w.shape().DebugString(),
                        ": the bias needs K = ", k, " values (or none)"));
    TensorShape ys;
    OP_REQUIRES_OK(ctx, ConvOutShape(x.dims(), x.dim_size(0), e.ho, e.wo, k, &ys));
    const bool want_z = HasPreactivation(attrs_.activation);
    Tensor *y = nullptr, *z = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, ys, &y));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, want_z ? ys : TensorShape({0}), &z));
    char err[kErrLen] = "";
    const int rc = api->forward(e.plan.get(), In(x), In(w), b.dim_size(0) ? In(b) : nullptr, Out(y),
                                want_z ? Out(z) : nullptr, err, kErrLen);
    OP_REQUIRES(ctx, rc == KC_OK, ApiStatus(rc, err));
  }
};

// Reads a *_sizes input: a 1-D int32 tensor of 3 or 4 non-negative values.
Status SizesShape(const Tensor& t, const char* name, TensorShape* out) {
  if (t.dims() != 1 || (t.NumElements() != 3 && t.NumElements() != 4))
    return Invalid(name, " must be a 1-D tensor of 3 or 4 values, got shape ", t.shape().DebugString());
  const int32_t* v = t.vec<int32_t>().data();
  const Status s = tensorflow::TensorShapeUtils::MakeShape(v, t.NumElements(), out);
  if (s.ok()) return s;
  return Invalid(name, " [", absl::StrJoin(v, v + t.NumElements(), ","), "]: ", s.message());
}

template <typename T>
class ConvBackpropInputOp : public ConvKernelBase {
 public:
  explicit ConvBackpropInputOp(OpKernelConstruction* ctx) : ConvKernelBase(ctx, false) {}

  void Compute(OpKernelContext* ctx) override {
    KCONV_REQUIRE_API(ctx, api);
    const Tensor &w = ctx->input(1), &dy = ctx->input(2);
    TensorShape xs;
    OP_REQUIRES_OK(ctx, SizesShape(ctx->input(0), "input_sizes", &xs));
    PlanCache::Entry e;
    OP_REQUIRES_OK(ctx, Plan(api, xs, w.shape(), &e));
    OP_REQUIRES_OK(ctx, CheckOutBackprop(dy.shape(), xs, w.shape(), e));
    Tensor* dx = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, xs, &dx));
    char err[kErrLen] = "";
    const int rc = api->backprop_input(e.plan.get(), In(w), In(dy), nullptr, Out(dx), nullptr, err, kErrLen);
    OP_REQUIRES(ctx, rc == KC_OK, ApiStatus(rc, err));
  }
};

// The transposed convolution: the input gradient's pass, with bias and activation fused into its store.
template <typename T>
class ConvTransposeOp : public ConvKernelBase {
 public:
  explicit ConvTransposeOp(OpKernelConstruction* ctx) : ConvKernelBase(ctx, true) {}

  void Compute(OpKernelContext* ctx) override {
    KCONV_REQUIRE_API(ctx, api);
    const Tensor &x = ctx->input(0), &w = ctx->input(1), &b = ctx->input(3);
    TensorShape ys;
    OP_REQUIRES_OK(ctx, SizesShape(ctx->input(2), "output_sizes", &ys));
    PlanCache::Entry e;
    OP_REQUIRES_OK(ctx, Plan(api, ys, w.shape(), &e));
    OP_REQUIRES_OK(ctx, CheckOutBackprop(x.shape(), ys, w.shape(), e));
    const long c = ys.dim_size(ys.dims() - 1);
    OP_REQUIRES(ctx, b.dims() == 1 && (b.dim_size(0) == c || b.dim_size(0) == 0),
                Invalid("bias shape ", b.shape().DebugString(), " and output_sizes ", ys.DebugString(),
                        ": the bias needs one value per output channel (", c, ") or none"));
    const bool want_z = HasPreactivation(attrs_.activation);
    Tensor *y = nullptr, *z = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, ys, &y));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, want_z ? ys : TensorShape({0}), &z));
    char err[kErrLen] = "";
    const int rc = api->backprop_input(e.plan.get(), In(w), In(x), b.dim_size(0) ? In(b) : nullptr, Out(y),
                                       want_z ? Out(z) : nullptr, err, kErrLen);
    OP_REQUIRES(ctx, rc == KC_OK, ApiStatus(rc, err));
  }
};

template <typename T>
class ConvBackpropFilterOp : public ConvKernelBase {
 public:
  explicit ConvBackpropFilterOp(OpKernelConstruction* ctx) : ConvKernelBase(ctx, false) {}

  void Compute(OpKernelContext* ctx) override {
    KCONV_REQUIRE_API(ctx, api);
    const Tensor &x = ctx->input(0), &dy = ctx->input(2);
    TensorShape fs;
    OP_REQUIRES_OK(ctx, SizesShape(ctx->input(1), "filter_sizes", &fs));
    PlanCache::Entry e;
    OP_REQUIRES_OK(ctx, Plan(api, x.shape(), fs, &e));
    OP_REQUIRES_OK(ctx, CheckOutBackprop(dy.shape(), x.shape(), fs, e));
    Tensor* dw = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, fs, &dw));
    char err[kErrLen] = "";
    const int rc = api->backprop_filter(e.plan.get(), In(x), In(dy), Out(dw), err, kErrLen);
    OP_REQUIRES(ctx, rc == KC_OK, ApiStatus(rc, err));
  }
};

template <typename T>
class BiasActivationGradOp : public OpKernel {
 public:
  explicit BiasActivationGradOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    std::string activation;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("activation", &activation));
    OP_REQUIRES_OK(ctx, ParseActivation(activation, &activation_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("threads", &threads_));
    OP_REQUIRES(ctx, threads_ >= 0, Invalid("attr 'threads' must be >= 0, got ", threads_));
  }

  void Compute(OpKernelContext* ctx) override {
    KCONV_REQUIRE_API(ctx, api);
    const Tensor &dy = ctx->input(0), &y = ctx->input(1), &z = ctx->input(2);
    const bool need_z = HasPreactivation(activation_);
    OP_REQUIRES(ctx, dy.dims() >= 1 && y.shape() == dy.shape() && (!need_z || z.shape() == dy.shape()),
                Invalid("gradients shape ", dy.shape().DebugString(), ", output shape ",
                        y.shape().DebugString(), " and preactivation shape ", z.shape().DebugString(),
                        ": gradients and output (and preactivation, for silu and gelu) must have "
                        "one shape of rank >= 1"));
    const long k = dy.dim_size(dy.dims() - 1);
    long rows = 1;  // the product of the leading dims (numel / K, defined also when K == 0)
    for (int i = 0; i + 1 < dy.dims(); ++i) rows *= dy.dim_size(i);
    Tensor *dz = nullptr, *db = nullptr;
    const bool linear = activation_ == KC_ACT_LINEAR;
    if (linear) {
      ctx->set_output(0, dy);  // dz is dy itself: only the bias sums are computed (TensorFlow's Sum: ~4x slower)
    } else {
      // dz takes dy's buffer when nothing else reads dy, as TensorFlow's own ReluGrad does: each value of dz
      // needs only the same value of dy, and dy was just written (still in cache) where a fresh buffer is
      // cold. In a graph, 64x28x28x32 relu: 0.72 -> 0.33-0.42 ms (TensorFlow's ReluGrad + bias sum 0.40-0.46).
      OP_REQUIRES_OK(ctx, ctx->forward_input_or_allocate_output({0}, 0, dy.shape(), &dz));
    }
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({k}), &db));
    char err[kErrLen] = "";
    const int rc = api->activation_grad(std::is_same<T, double>::value ? KC_FLOAT64 : KC_FLOAT32, activation_,
                                        rows, k, In(dy), In(y), need_z ? In(z) : nullptr,
                                        linear ? nullptr : Out(dz), Out(db), threads_, err, kErrLen);
    OP_REQUIRES(ctx, rc == KC_OK, ApiStatus(rc, err));
  }

 private:
  int activation_ = KC_ACT_LINEAR;
  int threads_ = 0;
};

// Rows (the product of all dims but the last) and features of a rank >= 2 tensor.
void RowsAndFeatures(const Tensor& t, long* rows, long* features) {
  *features = t.dim_size(t.dims() - 1);
  *rows = 1;
  for (int i = 0; i + 1 < t.dims(); ++i) *rows *= t.dim_size(i);
}

Status CheckFeatureVector(const Tensor& x, const Tensor& v, const char* name) {
  if (v.dims() == 1 && v.dim_size(0) == x.dim_size(x.dims() - 1)) return Status();
  return Invalid("batch norm input shape ", x.shape().DebugString(), " and ", name, " shape ",
                 v.shape().DebugString(), ": ", name, " must be a vector of the input's last dimension");
}

template <typename T>
class BatchNormOp : public OpKernel {
 public:
  explicit BatchNormOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("epsilon", &epsilon_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("training", &training_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("threads", &threads_));
    OP_REQUIRES(ctx, epsilon_ > 0, Invalid("attr 'epsilon' must be > 0, got ", epsilon_));
    OP_REQUIRES(ctx, threads_ >= 0, Invalid("attr 'threads' must be >= 0, got ", threads_));
  }

  void Compute(OpKernelContext* ctx) override {
    KCONV_REQUIRE_API(ctx, api);
    const Tensor& x = ctx->input(0);
    OP_REQUIRES(ctx, x.dims() >= 2,
                Invalid("batch norm input shape ", x.shape().DebugString(), ": must have rank >= 2"));
    const char* names[] = {"gamma", "beta", "mean", "variance"};
    for (int i = 1; i < 5; ++i) OP_REQUIRES_OK(ctx, CheckFeatureVector(x, ctx->input(i), names[i - 1]));
    long rows, features;
    RowsAndFeatures(x, &rows, &features);
    Tensor *y = nullptr, *mean = nullptr, *var = nullptr, *inv = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &y));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({features}), &mean));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, TensorShape({features}), &var));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(3, TensorShape({features}), &inv));
    char err[kErrLen] = "";
    const int rc = api->batch_norm(std::is_same<T, double>::value ? KC_FLOAT64 : KC_FLOAT32, rows, features,
                                   In(x), In(ctx->input(1)), In(ctx->input(2)), In(ctx->input(3)),
                                   In(ctx->input(4)), epsilon_, training_, Out(y), Out(mean), Out(var), Out(inv),
                                   threads_, err, kErrLen);
    OP_REQUIRES(ctx, rc == KC_OK, ApiStatus(rc, err));
  }

 private:
  float epsilon_ = 1e-3f;
  bool training_ = true;
  int threads_ = 0;
};

template <typename T>
class BatchNormGradOp : public OpKernel {
 public:
  explicit BatchNormGradOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("training", &training_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("threads", &threads_));
    OP_REQUIRES(ctx, threads_ >= 0, Invalid("attr 'threads' must be >= 0, got ", threads_));
  }

  void Compute(OpKernelContext* ctx) override {
    KCONV_REQUIRE_API(ctx, api);
    const Tensor &dy = ctx->input(0), &x = ctx->input(1);
    OP_REQUIRES(ctx, x.dims() >= 2 && dy.shape() == x.shape(),
                Invalid("batch norm gradients shape ", dy.shape().DebugString(), " and input shape ",
                        x.shape().DebugString(), ": must be one shape of rank >= 2"));
    const char* names[] = {"mean", "inv_std", "gamma"};
    for (int i = 2; i < 5; ++i) OP_REQUIRES_OK(ctx, CheckFeatureVector(x, ctx->input(i), names[i - 2]));
    long rows, features;
    RowsAndFeatures(x, &rows, &features);
    Tensor *dx = nullptr, *dgamma = nullptr, *dbeta = nullptr;
    // dx may take dy's buffer: each chunk reads its rows of dy (sums) before the pass that writes them.
    OP_REQUIRES_OK(ctx, ctx->forward_input_or_allocate_output({0}, 0, x.shape(), &dx));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({features}), &dgamma));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, TensorShape({features}), &dbeta));
    char err[kErrLen] = "";
    const int rc = api->batch_norm_grad(std::is_same<T, double>::value ? KC_FLOAT64 : KC_FLOAT32, rows,
                                        features, In(dy), In(x), In(ctx->input(2)), In(ctx->input(3)),
                                        In(ctx->input(4)), training_, Out(dx), Out(dgamma), Out(dbeta), threads_,
                                        err, kErrLen);
    OP_REQUIRES(ctx, rc == KC_OK, ApiStatus(rc, err));
  }

 private:
  bool training_ = true;
  int threads_ = 0;
};

}  // namespace
}  // namespace kconv

// ------------------------------------------------------------------------------------- registration

// clang-format off
// The attrs of the three convolution ops (the forward adds `activation`).
#define KCONV_CONV_ATTRS                                        \
  Attr("T: {float, double}")                                    \
  .Attr("strides: list(int)")                                   \
  .Attr("dilations: list(int)")                                 \
  .Attr("padding: {'VALID', 'SAME', 'CAUSAL', 'EXPLICIT'}")     \
  .Attr("explicit_paddings: list(int) = []")                    \
  .Attr("algorithm: string = 'auto'")                           \
  .Attr("threads: int = 0")

REGISTER_OP("KconvConv")
    .Input("input: T")
    .Input("filter: T")
    .Input("bias: T")
    .Output("output: T")
    .Output("preactivation: T")
    .KCONV_CONV_ATTRS
    .Attr("activation: string = 'linear'")
    .SetShapeFn(kconv::ConvShape)
    .Doc("output = activation(conv(input, filter) + bias), NHWC (or NWC for 1-D); bias may be empty. "
         "preactivation = conv + bias for silu and gelu (their gradient needs it), else empty.");

REGISTER_OP("KconvConvBackpropInput")
    .Input("input_sizes: int32")
    .Input("filter: T")
    .Input("out_backprop: T")
    .Output("output: T")
    .KCONV_CONV_ATTRS
    .SetShapeFn(kconv::BackpropInputShape)
    .Doc("The gradient of KconvConv's convolution with respect to its input.");

REGISTER_OP("KconvConvTranspose")
    .Input("input: T")
    .Input("filter: T")
    .Input("output_sizes: int32")
    .Input("bias: T")
    .Output("output: T")
    .Output("preactivation: T")
    .KCONV_CONV_ATTRS
    .Attr("activation: string = 'linear'")
    .SetShapeFn(kconv::ConvTransposeShape)
    .Doc("output = activation(conv_transpose(input, filter) + bias): KconvConvBackpropInput's pass with "
         "bias (one per output channel, or empty) and activation fused; preactivation as in KconvConv.");

REGISTER_OP("KconvConvBackpropFilter")
    .Input("input: T")
    .Input("filter_sizes: int32")
    .Input("out_backprop: T")
    .Output("output: T")
    .KCONV_CONV_ATTRS
    .SetShapeFn(kconv::BackpropFilterShape)
    .Doc("The gradient of KconvConv's convolution with respect to its filter.");

REGISTER_OP("KconvBiasActivationGrad")
    .Input("gradients: T")
    .Input("output: T")
    .Input("preactivation: T")
    .Output("backprops: T")
    .Output("bias_backprop: T")
    .Attr("T: {float, double}")
    .Attr("activation: string")
    .Attr("threads: int = 0")
    .SetShapeFn(kconv::BiasActivationGradShape)
    .Doc("backprops = gradients * activation'(.) at KconvConv's output (and preactivation), "
         "bias_backprop = their sum over all axes but the last.");

REGISTER_OP("KconvBatchNorm")
    .Input("x: T")
    .Input("gamma: T")
    .Input("beta: T")
    .Input("mean: T")
    .Input("variance: T")
    .Output("y: T")
    .Output("batch_mean: T")
    .Output("batch_variance: T")
    .Output("inv_std: T")
    .Attr("T: {float, double}")
    .Attr("epsilon: float = 0.001")
    .Attr("training: bool = true")
    .Attr("threads: int = 0")
    .SetShapeFn(kconv::BatchNormShape)
    .Doc("y = gamma * (x - m) / sqrt(v + epsilon) + beta over x's last axis. training: m, v are the batch's "
         "mean and biased variance (returned as batch_mean, batch_variance); else the mean and variance "
         "inputs (returned as given). inv_std = 1 / sqrt(v + epsilon), for the gradient.");

REGISTER_OP("KconvBatchNormGrad")
    .Input("gradients: T")
    .Input("x: T")
    .Input("mean: T")
    .Input("inv_std: T")
    .Input("gamma: T")
    .Output("x_backprop: T")
    .Output("gamma_backprop: T")
    .Output("beta_backprop: T")
    .Attr("T: {float, double}")
    .Attr("training: bool = true")
    .Attr("threads: int = 0")
    .SetShapeFn(kconv::BatchNormGradShape)
    .Doc("The gradients of KconvBatchNorm given its batch_mean and inv_std outputs.");

#define KCONV_REGISTER_KERNELS(T)                                                                  \
  REGISTER_KERNEL_BUILDER(Name("KconvConv").Device(tensorflow::DEVICE_CPU).TypeConstraint<T>("T"), \
                          kconv::ConvOp<T>);                                                       \
  REGISTER_KERNEL_BUILDER(                                                                         \
      Name("KconvConvBackpropInput").Device(tensorflow::DEVICE_CPU).TypeConstraint<T>("T"),        \
      kconv::ConvBackpropInputOp<T>);                                                              \
  REGISTER_KERNEL_BUILDER(                                                                         \
      Name("KconvConvTranspose").Device(tensorflow::DEVICE_CPU).TypeConstraint<T>("T"),            \
      kconv::ConvTransposeOp<T>);                                                                  \
  REGISTER_KERNEL_BUILDER(                                                                         \
      Name("KconvConvBackpropFilter").Device(tensorflow::DEVICE_CPU).TypeConstraint<T>("T"),       \
      kconv::ConvBackpropFilterOp<T>);                                                             \
  REGISTER_KERNEL_BUILDER(                                                                         \
      Name("KconvBiasActivationGrad").Device(tensorflow::DEVICE_CPU).TypeConstraint<T>("T"),       \
      kconv::BiasActivationGradOp<T>);                                                             \
  REGISTER_KERNEL_BUILDER(                                                                         \
      Name("KconvBatchNorm").Device(tensorflow::DEVICE_CPU).TypeConstraint<T>("T"),                \
      kconv::BatchNormOp<T>);                                                                      \
  REGISTER_KERNEL_BUILDER(                                                                         \
      Name("KconvBatchNormGrad").Device(tensorflow::DEVICE_CPU).TypeConstraint<T>("T"),            \
      kconv::BatchNormGradOp<T>);

KCONV_REGISTER_KERNELS(float)
KCONV_REGISTER_KERNELS(double)
// clang-format on

// Called once from Python (kconv._oplib) with the kc_api table of the kernels kconv imported for this CPU.
extern "C" __attribute__((visibility("default"))) int kconv_set_api(const kc_api* api) {
  if (api == nullptr || api->version != KC_API_VERSION) return -1;
  kconv::g_api.store(api, std::memory_order_release);
  return 0;
}
