<?php
// PHP signs: reads {"secret","prefix","algorithm","notifications":[[[name,value],...],...]}
// on stdin and prints a JSON list of form bodies, each signed by the
// published algorithm and encoded with http_build_query, as a PHP sender would.
require __DIR__ . '/itns_lib.php';

$job = readJob();
$out = array();
foreach ($job['notifications'] as $pairs) {
    $post = array();
    foreach ($pairs as $pair) {
        $post[$pair[0]] = $pair[1];
    }
    $post[$job['prefix'] . 'verify'] = itnsSignature($post, $job['secret'], $job['prefix'], $job['algorithm']);
    $out[] = http_build_query($post);
}
echo json_encode($out);
