// maefusemux: a GStreamer element that fuses an infrared and a visible stream through the maefuse C API.
//
// Sink pads `ir` (GRAY8 / GRAY16_LE) and `vis` (BGR / BGRx / RGB / GRAY8 / NV12), src pad BGR at the VIS size and
// frame rate. Built on GstAggregator, which queues both inputs and calls `aggregate` when each pad has data (or,
// live, when the `latency` deadline passes). Pairing by timestamp follows the one rule shared with maefuse-stream
// (pairing_rule.hpp, docs/streaming.md): each VIS frame with the nearest IR frame within `tolerance-ms`, after
// adding `ir-offset-ms` to the IR running times; IR reuse allowed and counted. The output takes the VIS frame's
// timestamp and duration. Properties: `model` (.pt2 package or TensorRT engine), `homography` (maefuse-calibrate
// JSON), `tolerance-ms`, `ir-offset-ms`, the read-only counters `fused`, `vis-unpaired`, `ir-unpaired`,
// `ir-reused`, and the aggregator's own `latency`. Failures (missing model, sizes that do not fit the model or the
// calibration) are posted on the bus.
#include "pairing_rule.hpp"

#include <maefuse/maefuse.h>

#include <gst/base/gstaggregator.h>
#include <gst/gst.h>
#include <gst/video/video.h>

GST_DEBUG_CATEGORY_STATIC(maefusemux_debug);
#define GST_CAT_DEFAULT maefusemux_debug

#define FRAME_SIZES "width = (int) [ 16, 32768 ], height = (int) [ 16, 32768 ], framerate = (fraction) [ 0/1, MAX ]"

static GstStaticPadTemplate ir_template = GST_STATIC_PAD_TEMPLATE(
    "ir", GST_PAD_SINK, GST_PAD_ALWAYS, GST_STATIC_CAPS("video/x-raw, format = (string) { GRAY8, GRAY16_LE }, " FRAME_SIZES));
static GstStaticPadTemplate vis_template = GST_STATIC_PAD_TEMPLATE(
    "vis", GST_PAD_SINK, GST_PAD_ALWAYS,
    GST_STATIC_CAPS("video/x-raw, format = (string) { BGR, BGRx, RGB, GRAY8, NV12 }, " FRAME_SIZES));
static GstStaticPadTemplate src_template = GST_STATIC_PAD_TEMPLATE(
    "src", GST_PAD_SRC, GST_PAD_ALWAYS, GST_STATIC_CAPS("video/x-raw, format = (string) BGR, " FRAME_SIZES));

struct GstMaefuseMux {
    GstAggregator parent;
    gchar* model;
    gchar* homography;
    maefuse_runtime* runtime;
    GstAggregatorPad* ir_pad;
    GstAggregatorPad* vis_pad;
    GstVideoInfo ir_info, vis_info, out_info;
    gboolean have_ir_info, have_vis_info;
    GstBuffer* held_ir;  // the latest IR frame at or before the VIS frame being paired
    gint64 held_ir_time;  // its running time plus the IR offset (ns)
    gdouble tolerance_ms;  // < 0: half the slower source's frame period
    gdouble ir_offset_ms;
    gint64 last_used_ir_time;  // the shifted time of the IR frame fused last (to count reuse), or G_MININT64
    guint64 fused, vis_unpaired, ir_unpaired, ir_reused;
};

struct GstMaefuseMuxClass {
    GstAggregatorClass parent_class;
};

#define GST_TYPE_MAEFUSE_MUX (gst_maefuse_mux_get_type())
#define GST_MAEFUSE_MUX(obj) (G_TYPE_CHECK_INSTANCE_CAST((obj), GST_TYPE_MAEFUSE_MUX, GstMaefuseMux))
G_DEFINE_TYPE(GstMaefuseMux, gst_maefuse_mux, GST_TYPE_AGGREGATOR)

enum { PROP_0, PROP_MODEL, PROP_HOMOGRAPHY, PROP_TOLERANCE_MS, PROP_IR_OFFSET_MS, PROP_FUSED, PROP_VIS_UNPAIRED,
       PROP_IR_UNPAIRED, PROP_IR_REUSED };

static maefuse_format to_maefuse(GstVideoFormat format) {
    switch (format) {
        case GST_VIDEO_FORMAT_GRAY8: return MAEFUSE_FORMAT_GRAY8;
        case GST_VIDEO_FORMAT_GRAY16_LE: return MAEFUSE_FORMAT_GRAY16;
        case GST_VIDEO_FORMAT_BGR: return MAEFUSE_FORMAT_BGR;
        case GST_VIDEO_FORMAT_BGRx: return MAEFUSE_FORMAT_BGRX;
        case GST_VIDEO_FORMAT_RGB: return MAEFUSE_FORMAT_RGB;
        case GST_VIDEO_FORMAT_NV12: return MAEFUSE_FORMAT_NV12;
        default: return static_cast<maefuse_format>(-1);
    }
}

// Drop the held IR frame; one that no VIS frame chose is counted unpaired.
static void clear_held(GstMaefuseMux* self) {
    if (self->held_ir && self->held_ir_time != self->last_used_ir_time) self->ir_unpaired++;
    gst_clear_buffer(&self->held_ir);
    self->held_ir_time = G_MININT64;
}

static void reset_counters(GstMaefuseMux* self) {
    self->last_used_ir_time = G_MININT64;
    self->fused = self->vis_unpaired = self->ir_unpaired = self->ir_reused = 0;
}

static void gst_maefuse_mux_set_property(GObject* object, guint id, const GValue* value, GParamSpec* pspec) {
    GstMaefuseMux* self = GST_MAEFUSE_MUX(object);
    GST_OBJECT_LOCK(self);
    switch (id) {
        case PROP_MODEL:
            g_free(self->model);
            self->model = g_value_dup_string(value);
            break;
        case PROP_HOMOGRAPHY:
            g_free(self->homography);
            self->homography = g_value_dup_string(value);
            break;
        case PROP_TOLERANCE_MS: self->tolerance_ms = g_value_get_double(value); break;
        case PROP_IR_OFFSET_MS: self->ir_offset_ms = g_value_get_double(value); break;
        default: G_OBJECT_WARN_INVALID_PROPERTY_ID(object, id, pspec);
    }
    GST_OBJECT_UNLOCK(self);
}

static void gst_maefuse_mux_get_property(GObject* object, guint id, GValue* value, GParamSpec* pspec) {
    GstMaefuseMux* self = GST_MAEFUSE_MUX(object);
    GST_OBJECT_LOCK(self);
    switch (id) {
        case PROP_MODEL: g_value_set_string(value, self->model); break;
        case PROP_HOMOGRAPHY: g_value_set_string(value, self->homography); break;
        case PROP_TOLERANCE_MS: g_value_set_double(value, self->tolerance_ms); break;
        case PROP_IR_OFFSET_MS: g_value_set_double(value, self->ir_offset_ms); break;
        case PROP_FUSED: g_value_set_uint64(value, self->fused); break;
        case PROP_VIS_UNPAIRED: g_value_set_uint64(value, self->vis_unpaired); break;
        case PROP_IR_UNPAIRED: g_value_set_uint64(value, self->ir_unpaired); break;
        case PROP_IR_REUSED: g_value_set_uint64(value, self->ir_reused); break;
        default: G_OBJECT_WARN_INVALID_PROPERTY_ID(object, id, pspec);
    }
    GST_OBJECT_UNLOCK(self);
}

static void gst_maefuse_mux_finalize(GObject* object) {
    GstMaefuseMux* self = GST_MAEFUSE_MUX(object);
    g_free(self->model);
    g_free(self->homography);
    maefuse_destroy(self->runtime);
    clear_held(self);
    G_OBJECT_CLASS(gst_maefuse_mux_parent_class)->finalize(object);
}

// READY -> PAUSED: load the model, so a missing or foreign model fails the state change with a bus error.
static gboolean gst_maefuse_mux_start(GstAggregator* agg) {
    GstMaefuseMux* self = GST_MAEFUSE_MUX(agg);
    GST_OBJECT_LOCK(self);
    gchar* model = g_strdup(self->model);
    gchar* homography = g_strdup(self->homography);
    GST_OBJECT_UNLOCK(self);
    reset_counters(self);
    gboolean ok = FALSE;
    if (!model || !*model) {
        GST_ELEMENT_ERROR(self, RESOURCE, NOT_FOUND, ("maefusemux: no model given"),
                          ("set the model property to a .pt2 package (maefuse-export --aoti) or a TensorRT engine"));
    } else {
        maefuse_options options;
        maefuse_options_init(&options);
        options.homography_path = homography && *homography ? homography : nullptr;
        const maefuse_status status = maefuse_create(model, &options, &self->runtime);
        if (status != MAEFUSE_OK) {
            GST_ELEMENT_ERROR(self, RESOURCE, OPEN_READ, ("maefusemux: %s", maefuse_last_error()),
                              ("maefuse_create(%s) returned %s", model, maefuse_status_name(status)));
        } else {
            GST_INFO_OBJECT(self, "loaded %s (%s)", model, maefuse_backend_name(self->runtime));
            ok = TRUE;
        }
    }
    g_free(model);
    g_free(homography);
    return ok;
}

static gboolean gst_maefuse_mux_stop(GstAggregator* agg) {
    GstMaefuseMux* self = GST_MAEFUSE_MUX(agg);
    maefuse_destroy(self->runtime);
    self->runtime = nullptr;
    clear_held(self);
    GST_INFO_OBJECT(self, "fused %" G_GUINT64_FORMAT ", VIS unpaired %" G_GUINT64_FORMAT ", IR unpaired %"
                    G_GUINT64_FORMAT ", IR reused %" G_GUINT64_FORMAT, self->fused, self->vis_unpaired,
                    self->ir_unpaired, self->ir_reused);
    self->have_ir_info = self->have_vis_info = FALSE;
    return TRUE;
}

// Sizes that cannot work are refused when the caps arrive, naming both sides.
static gboolean check_sizes(GstMaefuseMux* self) {
    if (!self->runtime) return FALSE;
    int w = 0, h = 0, iw = 0, ih = 0;
    maefuse_frame_size(self->runtime, &w, &h);
    maefuse_ir_frame_size(self->runtime, &iw, &ih);
    if (self->have_vis_info && (GST_VIDEO_INFO_WIDTH(&self->vis_info) != w || GST_VIDEO_INFO_HEIGHT(&self->vis_info) != h)) {
        GST_ELEMENT_ERROR(self, STREAM, FORMAT,
                          ("maefusemux: VIS stream is %dx%d but the model runs at %dx%d", GST_VIDEO_INFO_WIDTH(&self->vis_info),
                           GST_VIDEO_INFO_HEIGHT(&self->vis_info), w, h),
                          ("scale the VIS stream to %dx%d, or export the model at the camera size", w, h));
        return FALSE;
    }
    if (self->have_ir_info && (GST_VIDEO_INFO_WIDTH(&self->ir_info) != iw || GST_VIDEO_INFO_HEIGHT(&self->ir_info) != ih)) {
        GST_ELEMENT_ERROR(self, STREAM, FORMAT,
                          ("maefusemux: IR stream is %dx%d but %s %dx%d", GST_VIDEO_INFO_WIDTH(&self->ir_info),
                           GST_VIDEO_INFO_HEIGHT(&self->ir_info),
                           self->homography ? "the calibration is for IR" : "the VIS/model size is", iw, ih),
                          ("%s", self->homography ? "calibrate at this IR size (maefuse-calibrate)"
                                                  : "set the homography property to the cameras' calibration"));
        return FALSE;
    }
    return TRUE;
}

static gboolean gst_maefuse_mux_sink_event(GstAggregator* agg, GstAggregatorPad* pad, GstEvent* event) {
    GstMaefuseMux* self = GST_MAEFUSE_MUX(agg);
    if (GST_EVENT_TYPE(event) == GST_EVENT_CAPS) {
        GstCaps* caps = nullptr;
        gst_event_parse_caps(event, &caps);
        const gboolean ir = pad == self->ir_pad;
        GstVideoInfo* info = ir ? &self->ir_info : &self->vis_info;
        if (!gst_video_info_from_caps(info, caps)) {
            GST_ELEMENT_ERROR(self, STREAM, FORMAT, ("maefusemux: cannot read %s caps", ir ? "IR" : "VIS"),
                              ("%" GST_PTR_FORMAT, caps));
            gst_event_unref(event);
            return FALSE;
        }
        (ir ? self->have_ir_info : self->have_vis_info) = TRUE;
        if (!check_sizes(self)) {
            gst_event_unref(event);
            return FALSE;
        }
        gst_pad_mark_reconfigure(GST_AGGREGATOR_SRC_PAD(agg));
    } else if (GST_EVENT_TYPE(event) == GST_EVENT_FLUSH_STOP && pad == self->ir_pad) {
        clear_held(self);
    }
    return GST_AGGREGATOR_CLASS(gst_maefuse_mux_parent_class)->sink_event(agg, pad, event);
}

// The output: BGR at the VIS size and frame rate, once both inputs have caps.
static GstFlowReturn gst_maefuse_mux_update_src_caps(GstAggregator* agg, GstCaps* downstream, GstCaps** ret) {
    GstMaefuseMux* self = GST_MAEFUSE_MUX(agg);
    if (!self->have_vis_info || !self->have_ir_info) return GST_AGGREGATOR_FLOW_NEED_DATA;
    GstVideoInfo out;
    gst_video_info_set_format(&out, GST_VIDEO_FORMAT_BGR, GST_VIDEO_INFO_WIDTH(&self->vis_info),
                              GST_VIDEO_INFO_HEIGHT(&self->vis_info));
    GST_VIDEO_INFO_FPS_N(&out) = GST_VIDEO_INFO_FPS_N(&self->vis_info);
    GST_VIDEO_INFO_FPS_D(&out) = GST_VIDEO_INFO_FPS_D(&self->vis_info);
    GstCaps* caps = gst_video_info_to_caps(&out);
    *ret = gst_caps_intersect(caps, downstream);
    gst_caps_unref(caps);
    if (gst_caps_is_empty(*ret)) {
        gst_clear_caps(ret);
        return GST_FLOW_NOT_NEGOTIATED;
    }
    return GST_FLOW_OK;
}

static gboolean gst_maefuse_mux_negotiated_src_caps(GstAggregator* agg, GstCaps* caps) {
    GstMaefuseMux* self = GST_MAEFUSE_MUX(agg);
    return gst_video_info_from_caps(&self->out_info, caps);
}

static GstClockTime running_time(GstAggregatorPad* pad, GstBuffer* buffer) {
    return gst_segment_to_running_time(&pad->segment, GST_FORMAT_TIME, GST_BUFFER_PTS(buffer));
}

// A source's frame period in ns: from its caps' frame rate, else the buffer's duration; 0 when neither says.
static gint64 frame_period(const GstVideoInfo& info, GstBuffer* buffer) {
    if (GST_VIDEO_INFO_FPS_N(&info) > 0 && GST_VIDEO_INFO_FPS_D(&info) > 0)
        return static_cast<gint64>(gst_util_uint64_scale_int(GST_SECOND, GST_VIDEO_INFO_FPS_D(&info),
                                                             GST_VIDEO_INFO_FPS_N(&info)));
    return buffer && GST_BUFFER_DURATION_IS_VALID(buffer) ? static_cast<gint64>(GST_BUFFER_DURATION(buffer)) : 0;
}

static maefuse_frame frame_of(const GstVideoFrame& frame) {
    maefuse_frame f{};
    f.data = GST_VIDEO_FRAME_PLANE_DATA(&frame, 0);
    f.width = GST_VIDEO_FRAME_WIDTH(&frame);
    f.height = GST_VIDEO_FRAME_HEIGHT(&frame);
    f.stride = GST_VIDEO_FRAME_PLANE_STRIDE(&frame, 0);
    f.format = to_maefuse(GST_VIDEO_FRAME_FORMAT(&frame));
    if (GST_VIDEO_FRAME_N_PLANES(&frame) > 1) {
        f.uv_data = GST_VIDEO_FRAME_PLANE_DATA(&frame, 1);
        f.uv_stride = GST_VIDEO_FRAME_PLANE_STRIDE(&frame, 1);
    }
    return f;
}

static GstFlowReturn fuse_pair(GstMaefuseMux* self, GstBuffer* ir_buffer, GstBuffer* vis_buffer, GstBuffer** out) {
    GstVideoFrame ir, vis, fused;
    if (!gst_video_frame_map(&ir, &self->ir_info, ir_buffer, GST_MAP_READ)) {
        GST_ELEMENT_ERROR(self, STREAM, FAILED, ("maefusemux: cannot map an IR buffer"), (nullptr));
        return GST_FLOW_ERROR;
    }
    if (!gst_video_frame_map(&vis, &self->vis_info, vis_buffer, GST_MAP_READ)) {
        gst_video_frame_unmap(&ir);
        GST_ELEMENT_ERROR(self, STREAM, FAILED, ("maefusemux: cannot map a VIS buffer"), (nullptr));
        return GST_FLOW_ERROR;
    }
    *out = gst_buffer_new_allocate(nullptr, GST_VIDEO_INFO_SIZE(&self->out_info), nullptr);
    gst_video_frame_map(&fused, &self->out_info, *out, GST_MAP_WRITE);
    const maefuse_frame ir_frame = frame_of(ir), vis_frame = frame_of(vis);
    maefuse_output out_frame{};
    out_frame.data = GST_VIDEO_FRAME_PLANE_DATA(&fused, 0);
    out_frame.width = GST_VIDEO_FRAME_WIDTH(&fused);
    out_frame.height = GST_VIDEO_FRAME_HEIGHT(&fused);
    out_frame.stride = GST_VIDEO_FRAME_PLANE_STRIDE(&fused, 0);
    out_frame.format = MAEFUSE_FORMAT_BGR;
    const maefuse_status status = maefuse_fuse(self->runtime, &ir_frame, &vis_frame, &out_frame);
    gst_video_frame_unmap(&fused);
    gst_video_frame_unmap(&vis);
    gst_video_frame_unmap(&ir);
    if (status != MAEFUSE_OK) {
        gst_clear_buffer(out);
        GST_ELEMENT_ERROR(self, STREAM, FAILED, ("maefusemux: %s", maefuse_last_error()),
                          ("maefuse_fuse returned %s", maefuse_status_name(status)));
        return GST_FLOW_ERROR;
    }
    return GST_FLOW_OK;
}

static GstFlowReturn gst_maefuse_mux_aggregate(GstAggregator* agg, gboolean timeout) {
    GstMaefuseMux* self = GST_MAEFUSE_MUX(agg);
    GstBuffer* vis = gst_aggregator_pad_peek_buffer(self->vis_pad);
    if (!vis) {
        if (gst_aggregator_pad_is_eos(self->vis_pad)) return GST_FLOW_EOS;
        return GST_AGGREGATOR_FLOW_NEED_DATA;
    }
    if (!GST_BUFFER_PTS_IS_VALID(vis)) {
        gst_buffer_unref(vis);
        GST_ELEMENT_ERROR(self, STREAM, FAILED, ("maefusemux: a VIS buffer has no timestamp"),
                          ("pairing is by timestamp; put the source in do-timestamp mode"));
        return GST_FLOW_ERROR;
    }
    const GstClockTime vis_time = running_time(self->vis_pad, vis);
    GST_OBJECT_LOCK(self);
    const gint64 offset = static_cast<gint64>(self->ir_offset_ms * 1e6 + (self->ir_offset_ms >= 0 ? 0.5 : -0.5));
    const gdouble tolerance_ms = self->tolerance_ms;
    GST_OBJECT_UNLOCK(self);
    const gint64 vis_t = static_cast<gint64>(vis_time);

    // Consume IR frames up to the VIS time, holding the latest; the first one after it stays queued (it may be the
    // nearest, and it may serve the next VIS frame too).
    GstBuffer* next = nullptr;
    gint64 next_t = 0;
    for (;;) {
        GstBuffer* ir = gst_aggregator_pad_peek_buffer(self->ir_pad);
        if (!ir) {
            if (!gst_aggregator_pad_is_eos(self->ir_pad) && !timeout) {
                // The next IR frame decides between the held one and itself: wait for it.
                gst_buffer_unref(vis);
                return GST_AGGREGATOR_FLOW_NEED_DATA;
            }
            break;  // IR ended (or, live, is late): the held frame is the nearest there will be
        }
        const gint64 ir_t = static_cast<gint64>(running_time(self->ir_pad, ir)) + offset;
        if (ir_t <= vis_t) {
            clear_held(self);
            self->held_ir = ir;
            self->held_ir_time = ir_t;
            gst_aggregator_pad_drop_buffer(self->ir_pad);
            continue;
        }
        next = ir;
        next_t = ir_t;
        break;
    }
    const gint64 tolerance = tolerance_ms >= 0 ? static_cast<gint64>(tolerance_ms * 1e6 + 0.5)
                                               : maefuse_pairing::default_tolerance(
                                                     frame_period(self->ir_info, self->held_ir ? self->held_ir : next),
                                                     frame_period(self->vis_info, vis));
    const maefuse_pairing::Choice choice = maefuse_pairing::choose(self->held_ir != nullptr, self->held_ir_time,
                                                                   next != nullptr, next_t, vis_t, tolerance);
    GstBuffer* chosen = nullptr;
    gint64 chosen_t = 0;
    if (choice == maefuse_pairing::Choice::held) {
        chosen = gst_buffer_ref(self->held_ir);
        chosen_t = self->held_ir_time;
    } else if (choice == maefuse_pairing::Choice::next) {
        chosen = gst_buffer_ref(next);
        chosen_t = next_t;
    }
    gst_clear_buffer(&next);
    if (!chosen) {
        // No IR frame within the tolerance (or none at all yet): this VIS frame is unpaired.
        gst_aggregator_pad_drop_buffer(self->vis_pad);
        gst_buffer_unref(vis);
        self->vis_unpaired++;
        if (!self->held_ir && gst_aggregator_pad_is_eos(self->ir_pad) && !gst_aggregator_pad_has_buffer(self->ir_pad)) {
            GST_ELEMENT_ERROR(self, STREAM, FAILED, ("maefusemux: the IR stream ended before its first frame"),
                              ("check the IR source"));
            return GST_FLOW_ERROR;
        }
        return GST_FLOW_OK;
    }
    if (chosen_t == self->last_used_ir_time)
        self->ir_reused++;
    else
        self->last_used_ir_time = chosen_t;

    if (!gst_pad_has_current_caps(GST_AGGREGATOR_SRC_PAD(agg)) && !gst_aggregator_negotiate(agg)) {
        gst_buffer_unref(chosen);
        gst_buffer_unref(vis);
        return GST_FLOW_NOT_NEGOTIATED;
    }
    GstBuffer* out = nullptr;
    GstFlowReturn ret = fuse_pair(self, chosen, vis, &out);
    gst_buffer_unref(chosen);
    if (ret == GST_FLOW_OK) {
        GST_BUFFER_PTS(out) = vis_time;
        GST_BUFFER_DURATION(out) = GST_BUFFER_DURATION(vis);
        GST_AGGREGATOR_PAD(GST_AGGREGATOR_SRC_PAD(agg))->segment.position = vis_time;
        gst_aggregator_pad_drop_buffer(self->vis_pad);
        self->fused++;
        ret = gst_aggregator_finish_buffer(agg, out);
    }
    gst_buffer_unref(vis);
    return ret;
}

static GstFlowReturn gst_maefuse_mux_flush(GstAggregator* agg) {
    clear_held(GST_MAEFUSE_MUX(agg));
    return GST_FLOW_OK;
}

static void gst_maefuse_mux_class_init(GstMaefuseMuxClass* klass) {
    GObjectClass* object_class = G_OBJECT_CLASS(klass);
    GstElementClass* element_class = GST_ELEMENT_CLASS(klass);
    GstAggregatorClass* agg_class = GST_AGGREGATOR_CLASS(klass);
    object_class->set_property = gst_maefuse_mux_set_property;
    object_class->get_property = gst_maefuse_mux_get_property;
    object_class->finalize = gst_maefuse_mux_finalize;
    g_object_class_install_property(
        object_class, PROP_MODEL,
        g_param_spec_string("model", "Model", "AOTInductor package (.pt2, maefuse-export --aoti) or TensorRT engine",
                            nullptr, static_cast<GParamFlags>(G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS |
                                                              GST_PARAM_MUTABLE_READY)));
    g_object_class_install_property(
        object_class, PROP_HOMOGRAPHY,
        g_param_spec_string("homography", "Homography",
                            "IR-to-VIS calibration JSON from maefuse-calibrate (unset: the streams are registered)",
                            nullptr, static_cast<GParamFlags>(G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS |
                                                              GST_PARAM_MUTABLE_READY)));
    g_object_class_install_property(
        object_class, PROP_TOLERANCE_MS,
        g_param_spec_double("tolerance-ms", "Tolerance (ms)",
                            "largest timestamp gap of a pair; a VIS frame with no IR frame this near is dropped and "
                            "counted (-1: half the slower source's frame period, as maefuse-stream)",
                            -1.0, G_MAXDOUBLE, -1.0,
                            static_cast<GParamFlags>(G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS |
                                                     GST_PARAM_MUTABLE_PLAYING)));
    g_object_class_install_property(
        object_class, PROP_IR_OFFSET_MS,
        g_param_spec_double("ir-offset-ms", "IR offset (ms)",
                            "added to every IR timestamp before pairing (the IR camera's fixed delay, negated)",
                            -G_MAXDOUBLE, G_MAXDOUBLE, 0.0,
                            static_cast<GParamFlags>(G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS |
                                                     GST_PARAM_MUTABLE_PLAYING)));
    const struct {
        guint id;
        const char *name, *blurb;
    } counters[] = {
        {PROP_FUSED, "fused", "pairs fused"},
        {PROP_VIS_UNPAIRED, "vis-unpaired", "VIS frames dropped: no IR frame within the tolerance"},
        {PROP_IR_UNPAIRED, "ir-unpaired", "IR frames no VIS frame chose"},
        {PROP_IR_REUSED, "ir-reused", "times an IR frame served another VIS frame (IR slower than VIS)"},
    };
    for (const auto& counter : counters)
        g_object_class_install_property(
            object_class, counter.id,
            g_param_spec_uint64(counter.name, counter.name, counter.blurb, 0, G_MAXUINT64, 0,
                                static_cast<GParamFlags>(G_PARAM_READABLE | G_PARAM_STATIC_STRINGS)));
    gst_element_class_add_static_pad_template_with_gtype(element_class, &ir_template, GST_TYPE_AGGREGATOR_PAD);
    gst_element_class_add_static_pad_template_with_gtype(element_class, &vis_template, GST_TYPE_AGGREGATOR_PAD);
    gst_element_class_add_static_pad_template_with_gtype(element_class, &src_template, GST_TYPE_AGGREGATOR_PAD);
    gst_element_class_set_static_metadata(element_class, "MaeFuse infrared/visible fusion", "Filter/Video/Aggregator",
                                          "Pairs IR and VIS frames by timestamp and fuses them with a MaeFuse model",
                                          "maefuse-deploy");
    agg_class->start = gst_maefuse_mux_start;
    agg_class->stop = gst_maefuse_mux_stop;
    agg_class->sink_event = gst_maefuse_mux_sink_event;
    agg_class->update_src_caps = gst_maefuse_mux_update_src_caps;
    agg_class->negotiated_src_caps = gst_maefuse_mux_negotiated_src_caps;
    agg_class->aggregate = gst_maefuse_mux_aggregate;
    agg_class->flush = gst_maefuse_mux_flush;
    agg_class->get_next_time = gst_aggregator_simple_get_next_time;
}

static void gst_maefuse_mux_init(GstMaefuseMux* self) {
    GstElementClass* klass = GST_ELEMENT_GET_CLASS(self);
    auto make_pad = [&](const char* name) {
        GstPad* pad = GST_PAD(g_object_new(GST_TYPE_AGGREGATOR_PAD, "name", name, "direction", GST_PAD_SINK, "template",
                                           gst_element_class_get_pad_template(klass, name), nullptr));
        gst_element_add_pad(GST_ELEMENT(self), pad);
        return GST_AGGREGATOR_PAD(pad);
    };
    self->ir_pad = make_pad("ir");
    self->vis_pad = make_pad("vis");
    self->held_ir_time = G_MININT64;
    self->tolerance_ms = -1.0;
    reset_counters(self);
}

static gboolean plugin_init(GstPlugin* plugin) {
    GST_DEBUG_CATEGORY_INIT(maefusemux_debug, "maefusemux", 0, "MaeFuse IR/VIS fusion");
    return gst_element_register(plugin, "maefusemux", GST_RANK_NONE, GST_TYPE_MAEFUSE_MUX);
}

#define PACKAGE "maefuse-deploy"
GST_PLUGIN_DEFINE(GST_VERSION_MAJOR, GST_VERSION_MINOR, maefuse, "MaeFuse infrared/visible image fusion", plugin_init,
                  "0.1.0", "unknown", "maefuse-deploy", "https://github.com/maefuse-deploy")
