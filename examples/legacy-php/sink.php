<?php
// A stand-in secondary destination for the demo: it records each copy it
// receives with the X-Postback-* headers, as a partner's collector would.
require __DIR__ . '/_store.php';

legacy_record('sink', array(
    'id'      => isset($_SERVER['HTTP_X_POSTBACK_ID']) ? $_SERVER['HTTP_X_POSTBACK_ID'] : '',
    'din'     => isset($_SERVER['HTTP_X_POSTBACK_DIN']) ? $_SERVER['HTTP_X_POSTBACK_DIN'] : '',
    'attempt' => isset($_SERVER['HTTP_X_POSTBACK_ATTEMPT']) ? $_SERVER['HTTP_X_POSTBACK_ATTEMPT'] : '',
    'method'  => $_SERVER['REQUEST_METHOD'],
    'bytes'   => strlen(file_get_contents('php://input')) + strlen($_SERVER['QUERY_STRING']),
));
header('Content-Type: text/plain');
echo "RECEIVED\n";
