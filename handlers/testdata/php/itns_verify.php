<?php
// PHP verifies: reads {"secret","prefix","algorithm","bodies":[...]} on stdin,
// decodes each body with parse_str (the parser that fills $_POST) and prints
// a JSON list of booleans: does the published algorithm accept it?
require __DIR__ . '/itns_lib.php';

$job = readJob();
$out = array();
foreach ($job['bodies'] as $body) {
    $post = array();
    parse_str($body, $post);
    $field = $job['prefix'] . 'verify';
    $out[] = isset($post[$field])
        && itnsSignature($post, $job['secret'], $job['prefix'], $job['algorithm']) == $post[$field];
}
echo json_encode($out);
