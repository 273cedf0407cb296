<?php
// The published ClickBank instant-notification samples, used as an
// independent implementation to cross-check handlers/itns.go. They are kept
// as close to the published text as possible; the only change is that the
// posted fields, the secret key and the field prefix are arguments instead of
// $_POST, a constant and the literal "c".

// ClickBank 2.x / 4.0 sample ("ipnVerification"): every field but the
// signature, names sorted, each value followed by "|", then the secret key.
function ipnVerification($post, $secretKey, $prefix) {
    $pop = "";
    $ipnFields = array();
    foreach ($post as $key => $value) {
        if ($key == $prefix . "verify") {
            continue;
        }
        $ipnFields[] = $key;
    }
    sort($ipnFields);
    foreach ($ipnFields as $field) {
        // if Magic Quotes are enabled $post[$field] will need to be
        // un-escaped before being appended to $pop
        $pop = $pop . $post[$field] . "|";
    }
    $pop = $pop . $secretKey;
    // The sample converts to UTF-8 from the internal encoding (UTF-8), a
    // no-op for the valid UTF-8 used here; without mbstring, skip it.
    if (function_exists('mb_convert_encoding')) {
        $pop = mb_convert_encoding($pop, "UTF-8");
    }
    $calcedVerify = sha1($pop);
    $calcedVerify = strtoupper(substr($calcedVerify, 0, 8));
    return $calcedVerify;
}

// ClickBank 1.0 sample ("cbValid"): a fixed list of fields, in that order.
function cbValid($post, $key, $p) {
    $g = function ($name) use ($post, $p) {
        return isset($post[$p . $name]) ? $post[$p . $name] : '';
    };
    $ccustname = $g('custname');
    $ccustemail = $g('custemail');
    $ccustcc = $g('custcc');
    $ccuststate = $g('custstate');
    $ctransreceipt = $g('transreceipt');
    $cproditem = $g('proditem');
    $ctransaction = $g('transaction');
    $ctransaffiliate = $g('transaffiliate');
    $ctranspublisher = $g('transpublisher');
    $cprodtype = $g('prodtype');
    $cprodtitle = $g('prodtitle');
    $ctranspaymentmethod = $g('transpaymentmethod');
    $ctransamount = $g('transamount');
    $caffitid = $g('affitid');
    $cvendthru = $g('vendthru');
    $xxpop = sha1("$ccustname|$ccustemail|$ccustcc|$ccuststate|$ctransreceipt|$cproditem|$ctransaction|"
        . "$ctransaffiliate|$ctranspublisher|$cprodtype|$cprodtitle|$ctranspaymentmethod|$ctransamount|$caffitid|$cvendthru|$key");
    return strtoupper(substr($xxpop, 0, 8));
}

function itnsSignature($post, $secret, $prefix, $algorithm) {
    return $algorithm === 'v1' ? cbValid($post, $secret, $prefix) : ipnVerification($post, $secret, $prefix);
}

function readJob() {
    $job = json_decode(file_get_contents('php://stdin'), true);
    if (!is_array($job)) {
        fwrite(STDERR, "bad JSON on stdin\n");
        exit(2);
    }
    return $job;
}
