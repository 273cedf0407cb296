<?php
// JVZoo JVZIPN receiver, as in JVZoo's published sample: it checks cverify
// with the secret key (the ClickBank-compatible sorted scheme, prefix c),
// then records the sale. The edge checked sender, signature and replays
// before this script runs; the script itself is unchanged.
require __DIR__ . '/_store.php';

// The sample has the key as a literal; here the server passes it
// (php_fastcgi { env JVZOO_SECRET ... }), so the example runs as it is.
function jvzipnVerification()
{
    $secretKey = getenv('JVZOO_SECRET') ?: 'YOUR SECRET KEY';
    $pop = "";
    $ipnFields = array();
    foreach ($_POST as $key => $value) {
        if ($key == "cverify") {
            continue;
        }
        $ipnFields[] = $key;
    }
    sort($ipnFields);
    foreach ($ipnFields as $field) {
        $pop = $pop . $_POST[$field] . "|";
    }
    $pop = $pop . $secretKey;
    if (function_exists('mb_detect_encoding') && 'UTF-8' != mb_detect_encoding($pop)) {
        $pop = mb_convert_encoding($pop, "UTF-8");
    }
    $calcedVerify = sha1($pop);
    $calcedVerify = strtoupper(substr($calcedVerify, 0, 8));
    return $calcedVerify == $_POST["cverify"];
}

header('Content-Type: text/plain');
$ok = isset($_POST['cverify']) && jvzipnVerification();
legacy_record('jvzipn', array(
    'receipt'  => isset($_POST['ctransreceipt']) ? $_POST['ctransreceipt'] : '',
    'customer' => isset($_POST['ccustname']) ? $_POST['ccustname'] : '',
    'verified' => $ok,
));
echo $ok ? "OK" : "INVALID";
