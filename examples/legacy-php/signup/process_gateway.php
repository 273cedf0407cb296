<?php
// NATS process gateway: receives a cross-sale by POST and answers two lines,
// SALE OK + the new member id, or SALE DECLINED + the reason.
require __DIR__ . '/../_store.php';

header('Content-Type: text/plain');
if ($_SERVER['REQUEST_METHOD'] !== 'POST') {
    echo "SALE DECLINED\nUNSUPPORTED REQUEST\n";
    exit;
}
foreach (array('xs_nats', 'username', 'password', 'email', 'cc', 'cvv') as $required) {
    if (!isset($_POST[$required]) || $_POST[$required] === '') {
        echo "SALE DECLINED\nMISSING " . strtoupper($required) . "\n";
        exit;
    }
}
$id = legacy_next_id();
legacy_record('process_gateway', array(
    'member_id' => $id,
    'username'  => $_POST['username'],
    'email'     => $_POST['email'],
    'xs_nats'   => $_POST['xs_nats'],
));
echo "SALE OK\n" . $id . "\n";
