<?php
// Shared by the sample scripts: where a legacy script would keep its members.
// LEGACY_DATA_DIR is set by `make run` and by the end-to-end tests, so they can
// count how often each script ran; the scripts know nothing of the edge.
function legacy_data_dir() {
    $dir = getenv('LEGACY_DATA_DIR');
    if ($dir === false || $dir === '') {
        $dir = sys_get_temp_dir() . '/legacy-php';
    }
    if (!is_dir($dir)) {
        mkdir($dir, 0700, true);
    }
    return $dir;
}

// legacy_record appends one line per call; the line never holds card data.
function legacy_record($script, array $fields) {
    $line = json_encode(array('script' => $script, 'time' => time()) + $fields) . "\n";
    file_put_contents(legacy_data_dir() . '/' . $script . '.log', $line, FILE_APPEND | LOCK_EX);
}

// legacy_next_id hands out member ids, as the member database would.
function legacy_next_id() {
    $file = legacy_data_dir() . '/member-id';
    $fp = fopen($file, 'c+');
    flock($fp, LOCK_EX);
    $id = (int) stream_get_contents($fp) + 1;
    ftruncate($fp, 0);
    rewind($fp);
    fwrite($fp, (string) $id);
    fflush($fp);
    flock($fp, LOCK_UN);
    fclose($fp);
    return 100000 + $id;
}
