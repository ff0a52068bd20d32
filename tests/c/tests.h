/* Every test, once: X(name). run_tests.c turns the list into its table. */
#ifndef MX8_TESTS_H
#define MX8_TESTS_H

#define MX8_TESTS(X)                                \
    X(test_jpeg_crop_aware_bit_exact)               \
    X(test_jpeg_gray_and_cmyk_colours)              \
    X(test_jpeg_truncated)                          \
    X(test_jpeg_corrupt)                            \
    X(test_jpeg_too_large)                          \
    X(test_jpeg_scan_limit)                         \
    X(test_jpeg_scan_work_budget)                   \
    X(test_jpeg_dct_scaled_window)                  \
    X(test_png_all_modes_match_pillow_rules)        \
    X(test_png_truncated_and_corrupt)               \
    X(test_png_too_large)                           \
    X(test_png_header_sizes_checked_before_planning) \
    X(test_png_interlaced_small_sizes)              \
    X(test_resize_identity_exact)                   \
    X(test_resize_flip_and_layouts)                 \
    X(test_resize_matches_float_model)              \
    X(test_resize_rejects_bad_args)                 \
    X(test_rrc_windows_inside_and_in_bounds)        \
    X(test_rrc_positions_cover_the_image)           \
    X(test_rrc_deterministic_and_seed_sensitive)    \
    X(test_rrc_fallback_clamps_ratio)               \
    X(test_center_crop_box)                         \
    X(test_geometry_extreme_inputs_stay_in_bounds)  \
    X(test_transform_crop_aware_equals_full)        \
    X(test_transform_deterministic)                 \
    X(test_transform_equals_manual_pipeline)        \
    X(test_transform_png_and_dct_scaling)           \
    X(test_transform_rejects_garbage_and_bad_args)  \
    X(test_manifest_parse_and_hash)                 \
    X(test_manifest_missing_final_newline_hashes_canonically) \
    X(test_manifest_errors_name_the_line)           \
    X(test_manifest_many_unique_locations)          \
    X(test_manifest_reader_streams_in_any_chunks)   \
    X(test_manifest_index_round_trip_and_refusals)  \
    X(test_tar_writer_members_and_offsets)          \
    X(test_tar_writer_open_error_names_path)        \
    X(test_epoch_order_permutation_and_determinism) \
    X(test_epoch_share_slices_pads_and_drops)       \
    X(test_epoch_deal_resumes_exactly_once)         \
    X(test_epoch_order_batches_mix_blocks)          \
    X(test_engine_order_determinism_and_skip)       \
    X(test_engine_raw_mode_and_limits)              \
    X(test_engine_stop_with_work_pending)           \
    X(test_engine_runs_back_to_back_and_cancel)     \
    X(test_buffer_pool_reuse_and_lifetime) \
    X(test_transform_odd_sizes)                     \
    X(test_s3_sign_aws_doc_get_object)              \
    X(test_s3_sign_aws_doc_put_object)              \
    X(test_s3_sign_aws_doc_bucket_queries)          \
    X(test_s3_sign_encoding_rules)                  \
    X(test_s3_sign_host_ports_and_headers)          \
    X(test_s3_sign_rejects_bad_input_without_leaking_secret) \
    X(test_s3_xml_list_page)                        \
    X(test_s3_xml_error_body)                       \
    X(test_s3_xml_rejects_malformed) \
    X(test_s3_xml_result_text_and_error_in_200)    \
    X(test_remote_reader_coalesces_within_budget_and_cap) \
    X(test_remote_reader_skips_an_order_cut_short)  \
    X(test_remote_reader_retries_then_succeeds)     \
    X(test_remote_reader_missing_object_fails_naming_it) \
    X(test_remote_reader_truncated_object_fails_only_the_cut_sample) \
    X(test_remote_reader_stop_with_fetches_in_flight)

#define MX8_DECLARE(name) void name(void);
MX8_TESTS(MX8_DECLARE)
#undef MX8_DECLARE

#endif
